/**
 * The demand-response flow (paper III-C): anonymous demand bidding. The DSM runs a real round but
 * cannot link a bid to a household, or two bids to each other.
 *  - events: signed by the DSM, checked, announced TRE-signed on `broadcast/dr-event/{e}` (retained
 *    until the bid deadline, then cleared);
 *  - bids: authenticated by certificate, bounds-checked, stored before the PUBACK, each with a fresh
 *    128-bit pseudonym; a new bid from the same household for the same event supersedes the old one;
 *  - release: at the deadline and not before, all live pseudo-bids in one message in random order,
 *    with nothing but pseudonym, quantity and price;
 *  - acceptance: signed by the DSM (JWS naming the event and the DSM), once per event, after the
 *    release and before the event's acceptBy; all-or-nothing per bid; unknown or repeated
 *    pseudonyms refuse the whole message; accepted bids are credited q x p to the ledger in the same
 *    transaction that records the signed acceptance (a concurrent second acceptance is REPLAYED,
 *    an identical resend a duplicate); every household is told its outcome; the pseudonyms die;
 *  - compliance: after the window (+ grace), measured vs baseline (see baseline.ts), per pseudonym
 *    delivered / not delivered to the DSM (never readings); a shortfall reverses the credit pro rata;
 *    every accepted household is told its outcome.
 * Household outcomes are signed once per round (acceptance, settlement, cancellation): a Merkle
 * tree over one salted leaf per household, one TRE signature over its root; each household gets its
 * leaf, its inclusion proof and the signed root (household-notices.ts, protocol `drOutcomeTree`).
 * Cancellation, modification and the household's override: lifecycle-service.ts (rules in
 * lifecycle.ts). An overridden bid settles as not delivered, with its whole credit reversed.
 * Ledger lines of an event are referenced by `drRef` (its id and revision).
 * Sheddable bound: a bid may not exceed the household's baseline energy in the window, or, without
 * any history, its installed capacity x window length.
 * The rules are pure: admission.ts (named checks), settlement.ts, baseline.ts; the rows dr-book.ts.
 */

import {
  acceptanceSchema,
  bidSchema,
  decodePayload,
  drEventSchema,
  MAX_BULK_PAYLOAD_BYTES,
  PendingTimers,
  PROTOCOL_VERSION,
  topics,
} from '@tre/protocol';
import { drRef, postCredit, postReversal } from '../billing/ledger.js';
import { type HandlerResult, type InboundMessage, refusal, refusalOf } from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import type { FlowBase } from '../flow-base.js';
import type { ReadingStore } from '../ingest/reading-store.js';
import { acceptanceChecks, admit, bidChecks, eventChecks } from './admission.js';
import { baselineWh, type EnergyIn, measuredWh } from './baseline.js';
import type { DrBook } from './dr-book.js';
import { announce, clearAnnouncement, notifyRound } from './household-notices.js';
import { DrLifecycle } from './lifecycle-service.js';
import { newPseudonym, shuffled } from './pseudonyms.js';
import { settle, settleOverridden } from './settlement.js';

export interface DemandResponseOptions {
  /** Readings for the window are awaited this long after it ends before compliance (default 1 h). */
  complianceGraceMs?: number;
  /**
   * A bid counts as delivered when the reduction reaches this share of its quantity, an integer
   * per mille in [1, 1000] (default 900, i.e. 90 %).
   */
  deliveryThresholdMilli?: number;
}

export interface DemandResponseDeps
  extends Pick<FlowBase, 'store' | 'registry' | 'router' | 'outbound' | 'clock' | 'log' | 'signingKey'> {
  dr: DrBook;
  readings: ReadingStore;
  /** The members of a DNO group, for targeted events (from the monitoring flow). */
  groupMembers: (dnoId: string, groupId: string) => string[] | undefined;
}

export class DemandResponseService {
  private readonly timers: PendingTimers;
  private readonly energyIn: EnergyIn;
  readonly stats = { events: 0, bids: 0, released: 0 };
  /** Cancellation, modification, override. */
  readonly lifecycle: DrLifecycle;

  constructor(
    private readonly deps: DemandResponseDeps,
    private readonly options: DemandResponseOptions = {},
  ) {
    this.timers = new PendingTimers(deps.clock);
    this.energyIn = (meterId, from, to) => deps.readings.energyIn(meterId, from, to);
    this.lifecycle = new DrLifecycle({
      ...deps,
      at: (t, fn) => this.at(t, fn),
      release: (eventId) => this.release(eventId),
    });
  }

  start(): void {
    const { router, dr } = this.deps;
    router.on('event', (m) => this.handleEvent(m));
    router.on('bid', (m) => this.handleBid(m));
    router.on('accept', (m) => this.handleAcceptance(m));
    this.lifecycle.start();
    for (const e of dr.unsettled()) {
      if (e.stage === 'open') this.at(e.deadline, () => this.release(e.eventId));
      if (e.stage === 'accepted') this.at(e.windowEnd + this.grace, () => this.settle(e.eventId));
    }
  }

  private get grace(): number {
    return this.options.complianceGraceMs ?? 3_600_000;
  }

  private at(t: number, fn: () => Promise<unknown>): void {
    this.timers.after(Math.max(0, t - this.deps.clock.now()), () => {
      fn().catch((err: Error) => this.deps.log.error({ err: err.message }, 'demand-response step failed'));
    });
  }

  private targetMembers(event: { targetGroup?: { dnoId: string; groupId: string } }): string[] | undefined {
    return event.targetGroup && this.deps.groupMembers(event.targetGroup.dnoId, event.targetGroup.groupId);
  }

  private async handleEvent(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(msg, 'drEvent', drEventSchema, (e) => e.dsmId);
    if (!signed.ok) return signed.refusal;
    const { requestId, content: event } = signed;
    const rejected = admit(eventChecks, {
      event,
      now: this.deps.clock.now(),
      targetMembers: this.targetMembers(event),
    });
    if (rejected) return refusal(requestId, rejected.reason, rejected.message);
    const stored = await this.deps.store.commit(() => this.deps.dr.addEvent(event));
    if (!stored) return refusal(requestId, 'REPLAYED', `event ${event.eventId} already exists`);
    this.stats.events++;
    await announce(this.deps, { v: PROTOCOL_VERSION, event, expiresAt: event.bidDeadline }, true);
    this.at(Date.parse(event.bidDeadline), () => this.release(event.eventId));
    return { status: 'accepted', requestId, message: `event ${event.eventId} announced` };
  }

  /** How much this household could shed in the window (the sheddable bound). */
  sheddableWh(meterId: string, capacityW: number, windowStart: number, windowEnd: number): number {
    const baseline = baselineWh(this.energyIn, meterId, windowStart, windowEnd);
    return baseline ?? Math.floor((capacityW * (windowEnd - windowStart)) / 3_600_000);
  }

  private async handleBid(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, bidSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const bid = decoded.value;
    const requestId = bid.requestId;
    const meterId = msg.from.id;
    const household = this.deps.registry.get(meterId);
    if (!household) return refusal(requestId, 'UNKNOWN_METER', 'this meter is not registered');
    const replay = this.replayOf(bid, meterId);
    if (replay === 'duplicate') return { status: 'accepted', requestId, duplicate: true };
    if (replay) return refusal(requestId, 'REPLAYED', 'this bid id was already used');
    const event = this.deps.dr.event(bid.eventId);
    const rejected = admit(bidChecks, {
      bid,
      meterId,
      event,
      now: this.deps.clock.now(),
      targetMembers: event && this.targetMembers(event),
      sheddableWh: () =>
        this.sheddableWh(
          meterId,
          household.capacityW,
          Date.parse(event!.windowStart),
          Date.parse(event!.windowEnd),
        ),
    });
    if (rejected) return refusal(requestId, rejected.reason, rejected.message);
    const stored = await this.deps.store.commit(() => {
      // Checked again inside the transaction: a resend may have been committed meanwhile.
      const again = this.replayOf(bid, meterId);
      if (again) return again;
      return this.deps.dr.addBid({
        bid_id: bid.bidId,
        event_id: bid.eventId,
        meter_id: meterId,
        quantity_wh: bid.quantityWh,
        price: bid.pricePerMWh,
        pseudonym: newPseudonym(),
      });
    });
    if (stored === 'duplicate') return { status: 'accepted', requestId, duplicate: true };
    if (stored === 'replayed') return refusal(requestId, 'REPLAYED', 'this bid id was already used');
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
    const previous = this.deps.dr.bid(bid.bidId);
    if (!previous) return undefined;
    const same =
      previous.meter_id === meterId &&
      previous.event_id === bid.eventId &&
      previous.quantity_wh === bid.quantityWh &&
      previous.price === bid.pricePerMWh;
    return same && previous.status === 'live' ? 'duplicate' : 'replayed';
  }

  /**
   * At the deadline: all live pseudo-bids in one message, in random order. Nothing before the
   * deadline of the event's current terms (a modification may have moved it later).
   */
  async release(eventId: string): Promise<void> {
    const { dr, store, outbound } = this.deps;
    const event = dr.event(eventId);
    if (event?.stage !== 'open' || this.deps.clock.now() < Date.parse(event.bidDeadline)) return;
    const bids = await store.commit(() => {
      // Checked again inside the transaction: a change may have been committed meanwhile.
      if (dr.event(eventId)?.stage !== 'open') return undefined;
      dr.setStage(eventId, 'released');
      return dr.bidsOf(eventId, 'live');
    });
    if (!bids) return;
    await clearAnnouncement(this.deps, eventId);
    const body = {
      v: PROTOCOL_VERSION,
      eventId,
      bids: shuffled(bids).map((b) => ({
        pseudonym: b.pseudonym,
        quantityWh: b.quantity_wh,
        pricePerMWh: b.price,
      })),
    };
    await outbound.publish(topics.pseudoBids(event.dsmId, eventId), JSON.stringify(body));
    this.stats.released++;
  }

  private async handleAcceptance(msg: InboundMessage): Promise<HandlerResult> {
    const { dr, store } = this.deps;
    const signed = await verifySignedRequest(
      msg,
      'drAcceptance',
      acceptanceSchema,
      (a) => a.dsmId,
      MAX_BULK_PAYLOAD_BYTES,
    );
    if (!signed.ok) return signed.refusal;
    const { requestId, content: acceptance, jws } = signed;
    const { eventId, accepted } = acceptance;
    const event = msg.topic.param === eventId ? dr.event(eventId) : undefined;
    if (event?.dsmId === acceptance.dsmId && dr.acceptanceOf(eventId) === jws)
      return { status: 'accepted', requestId, duplicate: true };
    const live = event?.stage === 'released' ? dr.bidsOf(eventId, 'live') : [];
    const rejected = admit(acceptanceChecks, {
      acceptance,
      topicEventId: msg.topic.param,
      event,
      live,
      now: this.deps.clock.now(),
    });
    if (rejected) return refusal(requestId, rejected.reason, rejected.message);
    if (!event) throw new Error('acceptance admitted without its event'); // the checks require it
    const chosen = new Set(accepted);
    const windowStart = Date.parse(event.windowStart);
    const ref = drRef(eventId, event.revision);
    const recorded = await store.commit((db) => {
      // Checked again inside the transaction: another acceptance (or a change) may have been committed meanwhile.
      if (!dr.accept(eventId, jws)) return false;
      dr.markAccepted(eventId, accepted);
      for (const b of live)
        if (chosen.has(b.pseudonym)) postCredit(db, b.meter_id, ref, windowStart, b.quantity_wh, b.price);
      return true;
    });
    if (!recorded) {
      if (dr.acceptanceOf(eventId) === jws) return { status: 'accepted', requestId, duplicate: true };
      return refusal(requestId, 'REPLAYED', 'this event was already accepted; its pseudonyms are dead');
    }
    await notifyRound(
      this.deps,
      eventId,
      'acceptance',
      live.map((b) => {
        const ok = chosen.has(b.pseudonym);
        return {
          meterId: b.meter_id,
          bidId: b.bid_id,
          outcome: ok ? 'accepted' : 'not-accepted',
          ...(ok ? { creditMicroMinor: -b.quantity_wh * b.price } : {}),
        };
      }),
    );
    this.at(Date.parse(event.windowEnd) + this.grace, () => this.settle(eventId));
    // The same text for every acceptance: nothing in it depends on the bids or the households.
    return { status: 'accepted', requestId, message: 'acceptance recorded' };
  }

  /**
   * After the window: compliance per pseudonym to the DSM, credit reversals, household outcomes.
   * Nothing before the grace after the window of the event's current terms. An overridden bid is
   * not delivered, whatever the readings.
   */
  async settle(eventId: string): Promise<void> {
    const { dr, store, outbound } = this.deps;
    const event = dr.event(eventId);
    if (event?.stage !== 'accepted') return;
    const [start, end] = [Date.parse(event.windowStart), Date.parse(event.windowEnd)];
    if (this.deps.clock.now() < end + this.grace) return;
    const thresholdMilli = this.options.deliveryThresholdMilli ?? 900;
    const ref = drRef(eventId, event.revision);
    const results = await store.commit((db) => {
      // Checked again inside the transaction: a change may have been committed meanwhile.
      if (dr.event(eventId)?.stage !== 'accepted') return undefined;
      const bids = [...dr.bidsOf(eventId, 'accepted'), ...dr.bidsOf(eventId, 'overridden')];
      const out = bids.map((b) => {
        const bid = { quantityWh: b.quantity_wh, pricePerMWh: b.price };
        const settled =
          b.status === 'overridden'
            ? settleOverridden(bid)
            : settle(
                bid,
                baselineWh(this.energyIn, b.meter_id, start, end),
                measuredWh(this.energyIn, b.meter_id, start, end),
                thresholdMilli,
              );
        if (settled.keepMilli < 1000) postReversal(db, b.meter_id, ref, start, settled.reversalMicro);
        return { bid: b, delivered: settled.delivered, reversal: settled.reversalMicro };
      });
      dr.setStage(eventId, 'settled');
      return out;
    });
    if (!results) return;
    const report = {
      v: PROTOCOL_VERSION,
      eventId,
      results: shuffled(results).map((r) => ({ pseudonym: r.bid.pseudonym, delivered: r.delivered })),
    };
    await outbound.publish(topics.compliance(event.dsmId, eventId), JSON.stringify(report));
    await notifyRound(
      this.deps,
      eventId,
      'settlement',
      results.map((r) => ({
        meterId: r.bid.meter_id,
        bidId: r.bid.bid_id,
        outcome: r.delivered ? 'delivered' : 'not-delivered',
        ...(r.reversal ? { creditMicroMinor: r.reversal } : {}),
      })),
    );
  }

  stop(): void {
    this.timers.clear();
  }
}
