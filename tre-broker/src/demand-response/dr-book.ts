/**
 * Demand-response events and bids as the TRE keeps them (`dr_events`, `dr_bids`). The bid table is
 * the pseudonym map: only the TRE can link a pseudonym to its household, and only until the event is
 * settled (retention deletes its bids then, `forgetPseudonyms`).
 */
import type { DrEvent } from '@tre/protocol';
import type { Store } from '../store/store.js';

export type EventStage = 'open' | 'released' | 'accepted' | 'settled';
export type BidStatus = 'live' | 'superseded' | 'accepted' | 'rejected';

export interface BidRow {
  bid_id: string;
  event_id: string;
  meter_id: string;
  quantity_wh: number;
  price: number;
  pseudonym: string;
  status: BidStatus;
}

const SCHEMA = `CREATE TABLE dr_events (event_id TEXT PRIMARY KEY, dsm_id TEXT NOT NULL, body TEXT NOT NULL, deadline INTEGER NOT NULL,
    window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, stage TEXT NOT NULL DEFAULT 'open'
    CHECK (stage IN ('open', 'released', 'accepted', 'settled')));
  CREATE TABLE dr_bids (bid_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, meter_id TEXT NOT NULL, quantity_wh INTEGER NOT NULL,
    price INTEGER NOT NULL, pseudonym TEXT NOT NULL UNIQUE, status TEXT NOT NULL);
  CREATE INDEX dr_bids_event ON dr_bids (event_id, status);`;
/** The DSM's signed acceptance (compact JWS), kept as evidence of what it accepted. */
const ACCEPTANCE = 'ALTER TABLE dr_events ADD COLUMN acceptance_jws TEXT;';

export class DrBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): DrBook {
    store.migrate('dr-1', SCHEMA);
    store.migrate('dr-2-acceptance', ACCEPTANCE);
    // A household's live bid in an event is looked up on every bid: without it each bid scanned the
    // event's bids (quadratic in a 100,000-bid round).
    store.migrate(
      'dr-3-bid-by-household',
      'CREATE INDEX dr_bids_event_meter ON dr_bids (event_id, meter_id, status)',
    );
    return new DrBook(store);
  }

  event(eventId: string): (DrEvent & { stage: EventStage }) | undefined {
    const row = this.store.statement('SELECT body, stage FROM dr_events WHERE event_id = ?').get(eventId) as
      | { body: string; stage: EventStage }
      | undefined;
    if (!row) return undefined;
    const body = JSON.parse(row.body) as DrEvent;
    // Events stored before acceptBy existed may be accepted until their window starts.
    return { ...body, acceptBy: body.acceptBy ?? body.windowStart, stage: row.stage };
  }

  /** The DSM's signed acceptance of an event, if it was accepted. */
  acceptanceOf(eventId: string): string | undefined {
    const row = this.store
      .statement('SELECT acceptance_jws FROM dr_events WHERE event_id = ?')
      .get(eventId) as { acceptance_jws: string | null } | undefined;
    return row?.acceptance_jws ?? undefined;
  }

  /** Marks a released event accepted with the DSM's signed acceptance; false if it was not released. Inside a commit. */
  accept(eventId: string, jws: string): boolean {
    return (
      this.store
        .statement(
          "UPDATE dr_events SET stage = 'accepted', acceptance_jws = ? WHERE event_id = ? AND stage = 'released'",
        )
        .run(jws, eventId).changes === 1
    );
  }

  /** Events not yet settled, with the times their next step is due. */
  unsettled(): { eventId: string; stage: EventStage; deadline: number; windowEnd: number }[] {
    return this.store
      .statement(
        "SELECT event_id AS eventId, stage, deadline, window_end AS windowEnd FROM dr_events WHERE stage != 'settled'",
      )
      .all() as { eventId: string; stage: EventStage; deadline: number; windowEnd: number }[];
  }

  /** Stores a new event; false if its id exists. Inside a commit. */
  addEvent(e: DrEvent): boolean {
    return (
      this.store
        .statement(
          'INSERT INTO dr_events (event_id, dsm_id, body, deadline, window_start, window_end) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        )
        .run(
          e.eventId,
          e.dsmId,
          JSON.stringify(e),
          Date.parse(e.bidDeadline),
          Date.parse(e.windowStart),
          Date.parse(e.windowEnd),
        ).changes === 1
    );
  }

  /** Inside a commit. */
  setStage(eventId: string, stage: EventStage): void {
    this.store.statement('UPDATE dr_events SET stage = ? WHERE event_id = ?').run(stage, eventId);
  }

  /** Start of the earliest window of an accepted event not yet settled (its settlement still needs that window's baseline). */
  earliestUnsettledWindow(): number | undefined {
    const row = this.store
      .statement("SELECT min(window_start) AS t FROM dr_events WHERE stage = 'accepted'")
      .get() as { t: number | null };
    return row.t ?? undefined;
  }

  /** Events that still hold bids (pseudonym map entries), with their stage. */
  eventsWithBids(): { eventId: string; stage: EventStage }[] {
    return this.store
      .statement(
        'SELECT e.event_id AS eventId, e.stage FROM dr_events e WHERE EXISTS (SELECT 1 FROM dr_bids b WHERE b.event_id = e.event_id)',
      )
      .all() as { eventId: string; stage: EventStage }[];
  }

  /**
   * Retention: deletes the event's bids, i.e. its pseudonym <-> household map (bid ids, households,
   * pseudonyms, quantities, prices). The event's row stays, with the DSM's signed acceptance, so a
   * re-sent event or acceptance is still recognized. Returns how many bids it deleted. Inside a commit.
   */
  forgetPseudonyms(eventId: string): number {
    return this.store.statement('DELETE FROM dr_bids WHERE event_id = ?').run(eventId).changes;
  }

  bid(bidId: string): BidRow | undefined {
    return this.store.statement('SELECT * FROM dr_bids WHERE bid_id = ?').get(bidId) as BidRow | undefined;
  }

  /**
   * Stores a live bid under a fresh pseudonym, superseding the household's live bid for the same
   * event; returns how many it superseded. Inside a commit.
   */
  addBid(b: Omit<BidRow, 'status'>): number {
    const old = this.store
      .statement(
        "UPDATE dr_bids SET status = 'superseded' WHERE event_id = ? AND meter_id = ? AND status = 'live'",
      )
      .run(b.event_id, b.meter_id).changes;
    this.store
      .statement(
        "INSERT INTO dr_bids (bid_id, event_id, meter_id, quantity_wh, price, pseudonym, status) VALUES (?, ?, ?, ?, ?, ?, 'live')",
      )
      .run(b.bid_id, b.event_id, b.meter_id, b.quantity_wh, b.price, b.pseudonym);
    return old;
  }

  bidsOf(eventId: string, status: BidStatus): BidRow[] {
    return this.store
      .statement('SELECT * FROM dr_bids WHERE event_id = ? AND status = ?')
      .all(eventId, status) as BidRow[];
  }

  /**
   * Settles an acceptance in one statement: the event's live bids whose pseudonym is in `accepted`
   * become accepted, the others rejected. Returns how many it marked. Inside a commit.
   */
  markAccepted(eventId: string, accepted: readonly string[]): number {
    return this.store
      .statement(
        `UPDATE dr_bids SET status = CASE WHEN pseudonym IN (SELECT value FROM json_each(?)) THEN 'accepted' ELSE 'rejected' END
          WHERE event_id = ? AND status = 'live'`,
      )
      .run(JSON.stringify(accepted), eventId).changes;
  }

  /** Inside a commit. */
  markBid(bidId: string, status: BidStatus): void {
    this.store.statement('UPDATE dr_bids SET status = ? WHERE bid_id = ?').run(status, bidId);
  }
}
