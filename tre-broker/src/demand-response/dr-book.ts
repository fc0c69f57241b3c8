/**
 * Demand-response events and bids as the TRE keeps them (`dr_events`, `dr_bids`). The bid table is
 * the pseudonym map: only the TRE can link a pseudonym to its household, and only until the event is
 * settled (retention deletes its bids then, `forgetPseudonyms`).
 *
 * An event's lifecycle (lifecycle.ts): a modification replaces its terms as the next `revision`
 * (open for bids again), a cancellation marks it `cancelled` (a stage of its own, kept in a column:
 * the stored stage says how far it had got); each keeps the DSM's signed change as evidence, and
 * the terms and acceptance it replaced in `history`. Bids of a changed revision are `voided`; an
 * accepted bid the household took back is `overridden`.
 *
 * In a cluster of shards (issue 21) every shard keeps every event, with its round's `gateway`: the
 * shard the DSM raised it (or last modified it) through, where the round's bids are joined and
 * its acceptance arrives (round-gateway.ts). NULL for a single TRE.
 */
import type { DrEvent } from '@tre/protocol';
import type { Store } from '../store/store.js';

export type EventStage = 'open' | 'released' | 'accepted' | 'settled' | 'cancelled';
export type BidStatus = 'live' | 'superseded' | 'accepted' | 'rejected' | 'voided' | 'overridden';

/** An event as stored: its current terms, stage, revision and when the DSM last changed it. */
export type StoredEvent = DrEvent & {
  stage: EventStage;
  /** 0 as first raised, one more per modification. */
  revision: number;
  /** issuedAt (ms) of the DSM's last applied change; 0 if none. */
  changedAt: number;
};

/** What a revision was, kept when it is changed (`history`). */
interface Replaced {
  revision: number;
  body: DrEvent;
  stage: EventStage;
  acceptanceJws: string | null;
}

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
/** Lifecycle: the revision, cancellation, the DSM's last signed change and what it replaced. */
const LIFECYCLE = `ALTER TABLE dr_events ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE dr_events ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE dr_events ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE dr_events ADD COLUMN change_jws TEXT;
  ALTER TABLE dr_events ADD COLUMN history TEXT NOT NULL DEFAULT '[]';`;
/** Shards: the round's gateway shard (NULL for a single TRE, and for events stored before shards). */
const GATEWAY = 'ALTER TABLE dr_events ADD COLUMN gateway TEXT;';

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
    store.migrate('dr-4-lifecycle', LIFECYCLE);
    store.migrate('dr-5-gateway', GATEWAY);
    return new DrBook(store);
  }

  event(eventId: string): StoredEvent | undefined {
    const row = this.store
      .statement(
        'SELECT body, stage, revision, cancelled, changed_at AS changedAt FROM dr_events WHERE event_id = ?',
      )
      .get(eventId) as
      | { body: string; stage: EventStage; revision: number; cancelled: number; changedAt: number }
      | undefined;
    if (!row) return undefined;
    const body = JSON.parse(row.body) as DrEvent;
    return {
      ...body,
      // Events stored before acceptBy existed may be accepted until their window starts.
      acceptBy: body.acceptBy ?? body.windowStart,
      stage: row.cancelled ? 'cancelled' : row.stage,
      revision: row.revision,
      changedAt: row.changedAt,
    };
  }

  /** The DSM's last applied signed change (cancel or modify) of an event, if any. */
  changeOf(eventId: string): string | undefined {
    const row = this.store.statement('SELECT change_jws FROM dr_events WHERE event_id = ?').get(eventId) as
      | { change_jws: string | null }
      | undefined;
    return row?.change_jws ?? undefined;
  }

  /** The revisions an event's changes replaced, oldest first (evidence; never deleted). */
  history(eventId: string): Replaced[] {
    const row = this.store.statement('SELECT history FROM dr_events WHERE event_id = ?').get(eventId) as
      | { history: string }
      | undefined;
    return row ? (JSON.parse(row.history) as Replaced[]) : [];
  }

  /** The shard through which the event's round runs, in a cluster (undefined for a single TRE). */
  gatewayOf(eventId: string): string | undefined {
    const row = this.store.statement('SELECT gateway FROM dr_events WHERE event_id = ?').get(eventId) as
      | { gateway: string | null }
      | undefined;
    return row?.gateway ?? undefined;
  }

  /**
   * Applies the DSM's change to `revision` of an event: cancelled (`next` undefined), or the next
   * revision with the terms `next`, open for bids again (its round through `gateway` when given).
   * The replaced revision's terms, stage and acceptance go to `history`. False if the event is no
   * longer at that revision or is cancelled (a concurrent change). Inside a commit.
   */
  change(
    eventId: string,
    revision: number,
    change: { issuedAt: number; jws: string; next?: DrEvent; gateway?: string | undefined },
  ): boolean {
    const row = this.store
      .statement(
        'SELECT body, stage, acceptance_jws, history FROM dr_events WHERE event_id = ? AND revision = ? AND cancelled = 0',
      )
      .get(eventId, revision) as
      | { body: string; stage: EventStage; acceptance_jws: string | null; history: string }
      | undefined;
    if (!row) return false;
    const history = JSON.parse(row.history) as Replaced[];
    history.push({
      revision,
      body: JSON.parse(row.body) as DrEvent,
      stage: row.stage,
      acceptanceJws: row.acceptance_jws,
    });
    const { issuedAt, jws, next, gateway } = change;
    if (!next) {
      this.store
        .statement(
          'UPDATE dr_events SET cancelled = 1, changed_at = ?, change_jws = ?, history = ? WHERE event_id = ?',
        )
        .run(issuedAt, jws, JSON.stringify(history), eventId);
      return true;
    }
    this.store
      .statement(
        `UPDATE dr_events SET body = ?, deadline = ?, window_start = ?, window_end = ?, stage = 'open', revision = revision + 1,
          acceptance_jws = NULL, changed_at = ?, change_jws = ?, history = ?, gateway = coalesce(?, gateway) WHERE event_id = ?`,
      )
      .run(
        JSON.stringify(next),
        Date.parse(next.bidDeadline),
        Date.parse(next.windowStart),
        Date.parse(next.windowEnd),
        issuedAt,
        jws,
        JSON.stringify(history),
        gateway ?? null,
        eventId,
      );
    return true;
  }

  /**
   * Voids the event's bids that still count (live, accepted, overridden): their pseudonyms die.
   * Returns how many. Inside a commit.
   */
  voidBids(eventId: string): number {
    return this.store
      .statement(
        "UPDATE dr_bids SET status = 'voided' WHERE event_id = ? AND status IN ('live', 'accepted', 'overridden')",
      )
      .run(eventId).changes;
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
        "SELECT event_id AS eventId, stage, deadline, window_end AS windowEnd FROM dr_events WHERE stage != 'settled' AND cancelled = 0",
      )
      .all() as { eventId: string; stage: EventStage; deadline: number; windowEnd: number }[];
  }

  /** Stores a new event (its round through `gateway` in a cluster); false if its id exists. Inside a commit. */
  addEvent(e: DrEvent, gateway?: string): boolean {
    return (
      this.store
        .statement(
          'INSERT INTO dr_events (event_id, dsm_id, body, deadline, window_start, window_end, gateway) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        )
        .run(
          e.eventId,
          e.dsmId,
          JSON.stringify(e),
          Date.parse(e.bidDeadline),
          Date.parse(e.windowStart),
          Date.parse(e.windowEnd),
          gateway ?? null,
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
      .statement("SELECT min(window_start) AS t FROM dr_events WHERE stage = 'accepted' AND cancelled = 0")
      .get() as { t: number | null };
    return row.t ?? undefined;
  }

  /** Events that still hold bids (pseudonym map entries), with their stage. */
  eventsWithBids(): { eventId: string; stage: EventStage }[] {
    return this.store
      .statement(
        "SELECT e.event_id AS eventId, CASE WHEN e.cancelled = 1 THEN 'cancelled' ELSE e.stage END AS stage FROM dr_events e WHERE EXISTS (SELECT 1 FROM dr_bids b WHERE b.event_id = e.event_id)",
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
