/**
 * Demand-response events and bids as the TRE keeps them (`dr_events`, `dr_bids`). The bid table is
 * the pseudonym map: only the TRE can link a pseudonym to its household.
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

export class DrBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): DrBook {
    store.migrate('dr-1', SCHEMA);
    return new DrBook(store);
  }

  event(eventId: string): (DrEvent & { stage: EventStage }) | undefined {
    const row = this.store.statement('SELECT body, stage FROM dr_events WHERE event_id = ?').get(eventId) as
      | { body: string; stage: EventStage }
      | undefined;
    return row && { ...(JSON.parse(row.body) as DrEvent), stage: row.stage };
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

  /** Inside a commit. */
  markBid(bidId: string, status: BidStatus): void {
    this.store.statement('UPDATE dr_bids SET status = ? WHERE bid_id = ?').run(status, bidId);
  }
}
