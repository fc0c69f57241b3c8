/**
 * The demand-response flow (paper III-C): anonymous demand bidding. The DSM runs a real round but
 * cannot link a bid to a household, or two bids to each other.
 *  - events: signed by the DSM, checked, announced TRE-signed on `broadcast/dr-event/{e}` (retained
 *    until the bid deadline, then cleared);
 *  - bids: authenticated by certificate, bounds-checked, stored before the PUBACK, each with a fresh
 *    128-bit pseudonym; a new bid from the same household for the same event supersedes the old one;
 *  - release: at the deadline and not before, all live pseudo-bids in one message in random order,
 *    with nothing but pseudonym, quantity and price;
 *  - acceptance: all-or-nothing per bid; unknown or repeated pseudonyms refuse the whole message;
 *    accepted bids are credited q x p to the ledger in the same transaction; every household is told
 *    its outcome; the pseudonyms die (no second acceptance);
 *  - compliance: after the window (+ grace), measured vs baseline (see baseline.ts), per pseudonym
 *    delivered / not delivered to the DSM (never readings); a shortfall reverses the credit pro rata.
 * Sheddable bound: a bid may not exceed the household's baseline energy in the window, or, without
 * any history, its installed capacity x window length.
 */
import {
  acceptanceSchema,
  bidSchema,
  type DrAnnouncement,
  type DrEvent,
  type DrOutcome,
  decodePayload,
  drEventSchema,
  MAX_BULK_PAYLOAD_BYTES,
  PendingTimers,
  PROTOCOL_VERSION,
  signContent,
  topics,
} from '@tre/protocol';
import { migrateLedger, postCredit, reverseCredit } from '../billing/ledger.js';
import { type HandlerResult, type InboundMessage, refusalOf } from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import type { TreContext } from '../tre.js';
import { baselineWh, measuredWh } from './baseline.js';
import { newPseudonym, shuffled } from './pseudonyms.js';

export interface DemandResponseOptions {
  /** Readings for the window are awaited this long after it ends before compliance (default 1 h). */
  complianceGraceMs?: number;
  /** A bid counts as delivered when the reduction reaches this share of its quantity (default 0.9). */
  deliveryThreshold?: number;
  /** Returns the members of a DNO group, for targeted events (from the monitoring flow). */
  groupMembers?: (dnoId: string, groupId: string) => string[] | undefined;
}

interface BidRow {
  bid_id: string;
  event_id: string;
  meter_id: string;
  quantity_wh: number;
  price: number;
  pseudonym: string;
  status: 'live' | 'superseded' | 'accepted' | 'rejected';
}

export class DemandResponseService {
  private readonly timers: PendingTimers;
  readonly stats = { events: 0, bids: 0, released: 0 };

  constructor(
    private readonly ctx: TreContext,
    private readonly options: DemandResponseOptions = {},
  ) {
    this.timers = new PendingTimers(ctx.clock);
    ctx.store.migrate(
      'dr-1',
      `CREATE TABLE dr_events (event_id TEXT PRIMARY KEY, dsm_id TEXT NOT NULL, body TEXT NOT NULL, deadline INTEGER NOT NULL,
         window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, stage TEXT NOT NULL DEFAULT 'open'
         CHECK (stage IN ('open', 'released', 'accepted', 'settled')));
       CREATE TABLE dr_bids (bid_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, meter_id TEXT NOT NULL, quantity_wh INTEGER NOT NULL,
         price INTEGER NOT NULL, pseudonym TEXT NOT NULL UNIQUE, status TEXT NOT NULL);
       CREATE INDEX dr_bids_event ON dr_bids (event_id, status);`,
    );
    migrateLedger(ctx.store);
    ctx.router.on('event', (m) => this.handleEvent(m));
    ctx.router.on('bid', (m) => this.handleBid(m));
    ctx.router.on('accept', (m) => this.handleAcceptance(m));
    const pending = ctx.store.db
      .prepare("SELECT event_id, stage, deadline, window_end FROM dr_events WHERE stage != 'settled'")
      .all() as {
      event_id: string;
      stage: string;
      deadline: number;
      window_end: number;
    }[];
    for (const e of pending) {
      if (e.stage === 'open') this.at(e.deadline, () => this.release(e.event_id));
      if (e.stage === 'accepted') this.at(e.window_end + this.grace, () => this.settle(e.event_id));
    }
  }

  private get grace(): number {
    return this.options.complianceGraceMs ?? 3_600_000;
  }

  private at(t: number, fn: () => Promise<unknown>): void {
    this.timers.after(Math.max(0, t - this.ctx.clock.now()), () => {
      fn().catch((err: Error) => this.ctx.log.error({ err: err.message }, 'demand-response step failed'));
    });
  }

  private event(eventId: string): (DrEvent & { stage: string }) | undefined {
    const row = this.ctx.store.db
      .prepare('SELECT body, stage FROM dr_events WHERE event_id = ?')
      .get(eventId) as { body: string; stage: string } | undefined;
    return row && { ...(JSON.parse(row.body) as DrEvent), stage: row.stage };
  }

  private async handleEvent(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(msg, 'drEvent', drEventSchema, (e) => e.dsmId);
    if (!signed.ok) return signed.refusal;
    const { requestId, content: event } = signed;
    const now = this.ctx.clock.now();
    const [deadline, start, end] = [event.bidDeadline, event.windowStart, event.windowEnd].map(
      Date.parse,
    ) as [number, number, number];
    const invalid =
      deadline <= now
        ? 'the bid deadline has passed'
        : start < deadline
          ? 'the window must start after the bid deadline'
          : end <= start
            ? 'the window must end after it starts'
            : end - start > 24 * 3_600_000
              ? 'the window may last at most 24 hours'
              : undefined;
    if (invalid) return { status: 'refused', requestId, reason: 'EVENT_INVALID', message: invalid };
    if (
      event.targetGroup &&
      !this.options.groupMembers?.(event.targetGroup.dnoId, event.targetGroup.groupId)
    ) {
      return { status: 'refused', requestId, reason: 'EVENT_INVALID', message: 'unknown target group' };
    }
    const stored = await this.ctx.store.commit(
      (db) =>
        db
          .prepare(
            'INSERT INTO dr_events (event_id, dsm_id, body, deadline, window_start, window_end) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
          )
          .run(event.eventId, event.dsmId, JSON.stringify(event), deadline, start, end).changes,
    );
    if (!stored)
      return {
        status: 'refused',
        requestId,
        reason: 'REPLAYED',
        message: `event ${event.eventId} already exists`,
      };
    this.stats.events++;
    const announcement: DrAnnouncement = { v: PROTOCOL_VERSION, event, expiresAt: event.bidDeadline };
    const jws = await signContent('drAnnouncement', announcement, this.ctx.signingKey);
    await this.ctx.outbound.publish(
      topics.broadcastDrEvent(event.eventId),
      JSON.stringify({ v: PROTOCOL_VERSION, jws }),
      { retain: true },
    );
    this.at(deadline, () => this.release(event.eventId));
    return { status: 'accepted', requestId, message: `event ${event.eventId} announced` };
  }

  /** How much this household could shed in the window (the sheddable bound). */
  sheddableWh(meterId: string, capacityW: number, windowStart: number, windowEnd: number): number {
    const baseline = baselineWh(this.ctx.store.db, meterId, windowStart, windowEnd);
    return baseline ?? Math.floor((capacityW * (windowEnd - windowStart)) / 3_600_000);
  }

  private async handleBid(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, bidSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const bid = decoded.value;
    const requestId = bid.requestId;
    const meterId = msg.from.id;
    const household = this.ctx.registry.get(meterId);
    if (!household)
      return {
        status: 'refused',
        requestId,
        reason: 'UNKNOWN_METER',
        message: 'this meter is not registered',
      };
    const replay = this.replayOf(bid, meterId);
    if (replay === 'duplicate') return { status: 'accepted', requestId, duplicate: true };
    if (replay)
      return { status: 'refused', requestId, reason: 'REPLAYED', message: 'this bid id was already used' };
    const event = this.event(bid.eventId);
    if (!event)
      return {
        status: 'refused',
        requestId,
        reason: 'UNKNOWN_EVENT',
        message: 'no such demand-response event',
      };
    if (event.stage !== 'open' || this.ctx.clock.now() >= Date.parse(event.bidDeadline)) {
      return {
        status: 'refused',
        requestId,
        reason: 'BID_DEADLINE_PASSED',
        message: 'the bid deadline has passed',
      };
    }
    if (
      event.targetGroup &&
      !this.options.groupMembers?.(event.targetGroup.dnoId, event.targetGroup.groupId)?.includes(meterId)
    ) {
      return {
        status: 'refused',
        requestId,
        reason: 'NOT_AUTHORIZED',
        message: 'this household is not in the event’s target group',
      };
    }
    if (bid.pricePerMWh < 0 || bid.pricePerMWh > event.priceCapPerMWh)
      return {
        status: 'refused',
        requestId,
        reason: 'ABOVE_PRICE_CAP',
        message: `the price cap is ${event.priceCapPerMWh} per MWh`,
      };
    const sheddable = this.sheddableWh(
      meterId,
      household.capacityW,
      Date.parse(event.windowStart),
      Date.parse(event.windowEnd),
    );
    if (bid.quantityWh <= 0 || bid.quantityWh > sheddable)
      return {
        status: 'refused',
        requestId,
        reason: 'ABOVE_SHEDDABLE',
        message: `at most ${sheddable} Wh can be shed in this window`,
      };
    const stored = await this.ctx.store.commit((db) => {
      // Checked again inside the transaction: a resend may have been committed meanwhile.
      const again = this.replayOf(bid, meterId);
      if (again) return again;
      const old = db
        .prepare(
          "UPDATE dr_bids SET status = 'superseded' WHERE event_id = ? AND meter_id = ? AND status = 'live'",
        )
        .run(bid.eventId, meterId).changes;
      db.prepare(
        "INSERT INTO dr_bids (bid_id, event_id, meter_id, quantity_wh, price, pseudonym, status) VALUES (?, ?, ?, ?, ?, ?, 'live')",
      ).run(bid.bidId, bid.eventId, meterId, bid.quantityWh, bid.pricePerMWh, newPseudonym());
      return old;
    });
    if (stored === 'duplicate') return { status: 'accepted', requestId, duplicate: true };
    if (stored === 'replayed')
      return { status: 'refused', requestId, reason: 'REPLAYED', message: 'this bid id was already used' };
    this.stats.bids++;
    return {
      status: 'accepted',
      requestId,
      message: stored ? 'bid stored; it supersedes your previous bid' : 'bid stored',
    };
  }

  /** An identical live bid resent by its household is a duplicate; any other reuse of the id is a replay. */
  private replayOf(
    bid: { bidId: string; eventId: string; quantityWh: number; pricePerMWh: number },
    meterId: string,
  ): 'duplicate' | 'replayed' | undefined {
    const previous = this.ctx.store.db.prepare('SELECT * FROM dr_bids WHERE bid_id = ?').get(bid.bidId) as
      | BidRow
      | undefined;
    if (!previous) return undefined;
    const same =
      previous.meter_id === meterId &&
      previous.event_id === bid.eventId &&
      previous.quantity_wh === bid.quantityWh &&
      previous.price === bid.pricePerMWh;
    return same && previous.status === 'live' ? 'duplicate' : 'replayed';
  }

  /** At the deadline: all live pseudo-bids in one message, in random order. */
  async release(eventId: string): Promise<void> {
    const event = this.event(eventId);
    if (event?.stage !== 'open') return;
    const bids = await this.ctx.store.commit((db) => {
      db.prepare("UPDATE dr_events SET stage = 'released' WHERE event_id = ?").run(eventId);
      return db
        .prepare("SELECT pseudonym, quantity_wh, price FROM dr_bids WHERE event_id = ? AND status = 'live'")
        .all(eventId) as {
        pseudonym: string;
        quantity_wh: number;
        price: number;
      }[];
    });
    await this.ctx.outbound.publish(topics.broadcastDrEvent(eventId), '', { retain: true }); // clears the retained announcement
    const body = {
      v: PROTOCOL_VERSION,
      eventId,
      bids: shuffled(bids).map((b) => ({
        pseudonym: b.pseudonym,
        quantityWh: b.quantity_wh,
        pricePerMWh: b.price,
      })),
    };
    await this.ctx.outbound.publish(topics.pseudoBids(event.dsmId, eventId), JSON.stringify(body));
    this.stats.released++;
  }

  private async handleAcceptance(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, acceptanceSchema, MAX_BULK_PAYLOAD_BYTES);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, eventId, accepted } = decoded.value;
    if (msg.topic.param !== eventId)
      return { status: 'refused', requestId, reason: 'MALFORMED', message: 'eventId differs from the topic' };
    const event = this.event(eventId);
    if (!event || event.dsmId !== msg.from.id)
      return { status: 'refused', requestId, reason: 'UNKNOWN_EVENT', message: 'no such event of this DSM' };
    if (event.stage === 'open')
      return {
        status: 'refused',
        requestId,
        reason: 'EVENT_INVALID',
        message: 'the bids have not been released yet',
      };
    if (event.stage !== 'released')
      return {
        status: 'refused',
        requestId,
        reason: 'REPLAYED',
        message: 'this event was already accepted; its pseudonyms are dead',
      };
    if (new Set(accepted).size !== accepted.length)
      return {
        status: 'refused',
        requestId,
        reason: 'UNKNOWN_PSEUDONYM',
        message: 'a pseudonym is listed twice',
      };
    const live = this.ctx.store.db
      .prepare("SELECT * FROM dr_bids WHERE event_id = ? AND status = 'live'")
      .all(eventId) as BidRow[];
    const byPseudonym = new Map(live.map((b) => [b.pseudonym, b]));
    const unknown = accepted.filter((p) => !byPseudonym.has(p)).length;
    if (unknown > 0)
      return {
        status: 'refused',
        requestId,
        reason: 'UNKNOWN_PSEUDONYM',
        message: `${unknown} pseudonyms were never released for this event`,
      };
    const chosen = new Set(accepted);
    const windowStart = Date.parse(event.windowStart);
    await this.ctx.store.commit((db) => {
      const mark = db.prepare('UPDATE dr_bids SET status = ? WHERE bid_id = ?');
      for (const b of live) {
        const ok = chosen.has(b.pseudonym);
        mark.run(ok ? 'accepted' : 'rejected', b.bid_id);
        if (ok) postCredit(db, b.meter_id, eventId, windowStart, b.quantity_wh, b.price);
      }
      db.prepare("UPDATE dr_events SET stage = 'accepted' WHERE event_id = ?").run(eventId);
    });
    for (const b of live) {
      const ok = chosen.has(b.pseudonym);
      await this.notify(b.meter_id, {
        v: PROTOCOL_VERSION,
        eventId,
        bidId: b.bid_id,
        outcome: ok ? 'accepted' : 'not-accepted',
        ...(ok ? { creditMicroMinor: -b.quantity_wh * b.price } : {}),
      });
    }
    this.at(Date.parse(event.windowEnd) + this.grace, () => this.settle(eventId));
    return { status: 'accepted', requestId, message: `${accepted.length} of ${live.length} bids accepted` };
  }

  private async notify(meterId: string, outcome: DrOutcome): Promise<void> {
    await this.ctx.router.reply({ role: 'meter', id: meterId }, 'dr-outcome', {
      v: PROTOCOL_VERSION,
      jws: await signContent('drOutcome', outcome, this.ctx.signingKey),
    });
  }

  /** After the window: compliance per pseudonym to the DSM, credit reversals, household outcomes. */
  async settle(eventId: string): Promise<void> {
    const event = this.event(eventId);
    if (event?.stage !== 'accepted') return;
    const [start, end] = [Date.parse(event.windowStart), Date.parse(event.windowEnd)];
    const threshold = this.options.deliveryThreshold ?? 0.9;
    const results = await this.ctx.store.commit((db) => {
      const accepted = db
        .prepare("SELECT * FROM dr_bids WHERE event_id = ? AND status = 'accepted'")
        .all(eventId) as BidRow[];
      const out = accepted.map((b) => {
        const baseline = baselineWh(db, b.meter_id, start, end);
        const measured = measuredWh(db, b.meter_id, start, end);
        const reduction = baseline === undefined || !measured.complete ? 0 : baseline - measured.wh;
        const ratio = Math.max(0, Math.min(1, reduction / b.quantity_wh));
        const delivered = ratio >= threshold;
        const credit = -b.quantity_wh * b.price;
        // Shortfall: reverse the undelivered share of the credit (all of it below 50 %).
        const keep = delivered ? 1 : ratio < 0.5 ? 0 : ratio;
        const keepMilli = Math.round(keep * 1000);
        if (keepMilli < 1000) reverseCredit(db, b.meter_id, eventId, start, credit, 1000 - keepMilli, 1000);
        return { bid: b, delivered, reversal: Math.trunc((-credit * (1000 - keepMilli)) / 1000) };
      });
      db.prepare("UPDATE dr_events SET stage = 'settled' WHERE event_id = ?").run(eventId);
      return out;
    });
    const report = {
      v: PROTOCOL_VERSION,
      eventId,
      results: shuffled(results).map((r) => ({ pseudonym: r.bid.pseudonym, delivered: r.delivered })),
    };
    await this.ctx.outbound.publish(topics.compliance(event.dsmId, eventId), JSON.stringify(report));
    for (const r of results) {
      await this.notify(r.bid.meter_id, {
        v: PROTOCOL_VERSION,
        eventId,
        bidId: r.bid.bid_id,
        outcome: r.delivered ? 'delivered' : 'not-delivered',
        ...(r.reversal ? { creditMicroMinor: r.reversal } : {}),
      });
    }
  }

  stop(): void {
    this.timers.clear();
  }
}
