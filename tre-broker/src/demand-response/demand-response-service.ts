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
 *
 * In a cluster of shards (issue 21; `cluster` set) every shard gets every event (replicated, `via`
 * the shard the DSM is connected to, recorded as the round's gateway) and keeps its own
 * households' bids, pseudonyms, credits and notices. At the deadline it sends its shuffled bids to
 * the gateway instead of the DSM; the gateway releases the union once, checks the acceptance and
 * forwards it; each shard verifies and applies it to its own bids, then after the window sends
 * its compliance results to the gateway, which reports once (round-gateway.ts). The DSM gets one
 * message per stage, in the shape one TRE sends.
 */

import { createPublicKey } from 'node:crypto';
import {
  type Acceptance,
  acceptanceSchema,
  bidSchema,
  decodePayload,
  drEventSchema,
  MAX_BULK_PAYLOAD_BYTES,
  PendingTimers,
  PROTOCOL_VERSION,
  topics,
  verifyContent,
} from '@tre/protocol';
import { drRef, postCredit, postReversal } from '../billing/ledger.js';
import { type HandlerResult, type InboundMessage, refusal, refusalOf } from '../broker/message-router.js';
import { type SignedRequest, verifySignedRequest } from '../broker/signed-request.js';
import type { FlowBase } from '../flow-base.js';
import type { ReadingStore } from '../ingest/reading-store.js';
import { acceptanceChecks, admit, bidChecks, eventChecks } from './admission.js';
import { baselineWh, type EnergyIn, measuredWh } from './baseline.js';
import type { BidRow, DrBook, StoredEvent } from './dr-book.js';
import { announce, clearAnnouncement, notifyRound } from './household-notices.js';
import { DrLifecycle } from './lifecycle-service.js';
import { newPseudonym, shuffled } from './pseudonyms.js';
import {
  ACCEPTANCE,
  BATCH,
  COMPLIANCE,
  forwardedAcceptanceSchema,
  LATE,
  lateSchema,
  migrateRoundGateway,
  RoundGateway,
} from './round-gateway.js';
import { settle, settleOverridden } from './settlement.js';

export interface DemandResponseOptions {
  /** Readings for the window are awaited this long after it ends before compliance (default 1 h). */
  complianceGraceMs?: number;
  /**
   * A bid counts as delivered when the reduction reaches this share of its quantity, an integer
   * per mille in [1, 1000] (default 900, i.e. 90 %).
   */
  deliveryThresholdMilli?: number;
  /**
   * In a cluster of shards: how long a round's gateway waits for the other shards' bid batches
   * after its own deadline, and for their compliance results after its own grace (default 2 min).
   */
  shardGraceMs?: number;
}

const DEFAULTS: Required<DemandResponseOptions> = {
  complianceGraceMs: 3_600_000,
  deliveryThresholdMilli: 900,
  shardGraceMs: 2 * 60_000,
};

export interface DemandResponseDeps
  extends Pick<
    FlowBase,
    'store' | 'registry' | 'router' | 'outbound' | 'clock' | 'log' | 'signingKey' | 'cluster'
  > {
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
  /** In a cluster: the rounds this shard is the gateway of (undefined for a single TRE). */
  readonly gateway: RoundGateway | undefined;
  private readonly options: Required<DemandResponseOptions>;

  constructor(
    private readonly deps: DemandResponseDeps,
    options: DemandResponseOptions = {},
  ) {
    this.options = {
      complianceGraceMs: options.complianceGraceMs ?? DEFAULTS.complianceGraceMs,
      deliveryThresholdMilli: options.deliveryThresholdMilli ?? DEFAULTS.deliveryThresholdMilli,
      shardGraceMs: options.shardGraceMs ?? DEFAULTS.shardGraceMs,
    };
    this.timers = new PendingTimers(deps.clock);
    this.energyIn = (meterId, from, to) => deps.readings.energyIn(meterId, from, to);
    // In every TRE: a standby replays the gateway's rows before it is given its shard's cluster.
    migrateRoundGateway(deps.store);
    this.gateway =
      deps.cluster &&
      new RoundGateway(
        { ...deps, cluster: deps.cluster },
        { shardGraceMs: this.options.shardGraceMs, complianceGraceMs: this.options.complianceGraceMs },
      );
    this.lifecycle = new DrLifecycle({
      ...deps,
      at: (t, fn) => this.at(t, fn),
      release: (eventId) => this.release(eventId),
      changed: (eventId) => this.gateway?.drop(eventId),
    });
  }

  start(): void {
    const { router, dr } = this.deps;
    router.on('event', (m) => this.handleEvent(m));
    router.on('bid', (m) => this.handleBid(m));
    router.on('accept', (m) => this.handleAcceptance(m));
    this.lifecycle.start();
    if (this.deps.cluster && this.gateway) {
      this.gateway.start();
      this.deps.cluster.on(ACCEPTANCE, (from, body) => this.applyForwarded(from, body));
      this.deps.cluster.on(LATE, (from, body) => this.lapse(from, body));
    }
    for (const e of dr.unsettled()) {
      if (e.stage === 'open') this.at(e.deadline, () => this.release(e.eventId));
      if (e.stage === 'accepted') this.at(e.windowEnd + this.grace, () => this.settle(e.eventId));
    }
  }

  private get grace(): number {
    return this.options.complianceGraceMs;
  }

  /** The shard through which the event's round runs, in a cluster; undefined: this TRE alone. */
  private gatewayOf(eventId: string): string | undefined {
    return this.deps.cluster && this.deps.dr.gatewayOf(eventId);
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
    // In a cluster, the round runs through the shard the DSM is connected to.
    const gateway = this.deps.cluster && (msg.via ?? this.deps.cluster.shard);
    const stored = await this.deps.store.commit(() => this.deps.dr.addEvent(event, gateway));
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
   * At the deadline: all live pseudo-bids in one message, in random order (in a cluster: one batch
   * to the round's gateway, which releases the union). Nothing before the deadline of the event's
   * current terms (a modification may have moved it later).
   */
  async release(eventId: string): Promise<void> {
    const { dr, store, outbound, cluster } = this.deps;
    const event = dr.event(eventId);
    if (event?.stage !== 'open' || this.deps.clock.now() < Date.parse(event.bidDeadline)) return;
    const gateway = this.gatewayOf(eventId);
    const own = gateway !== undefined && gateway === cluster?.shard;
    if (own) await this.gateway?.open(event);
    const bids = await store.commit(() => {
      // Checked again inside the transaction: a change may have been committed meanwhile.
      if (dr.event(eventId)?.stage !== 'open') return undefined;
      dr.setStage(eventId, 'released');
      return dr.bidsOf(eventId, 'live');
    });
    if (!bids) {
      if (own) this.gateway?.drop(eventId, event.revision);
      return;
    }
    await clearAnnouncement(this.deps, eventId);
    const pseudoBids = shuffled(bids).map((b) => ({
      pseudonym: b.pseudonym,
      quantityWh: b.quantity_wh,
      pricePerMWh: b.price,
    }));
    if (gateway && cluster)
      await cluster.send(gateway, BATCH, { eventId, revision: event.revision, bids: pseudoBids });
    else
      await outbound.publish(
        topics.pseudoBids(event.dsmId, eventId),
        JSON.stringify({ v: PROTOCOL_VERSION, eventId, bids: pseudoBids }),
      );
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
    const gateway = event && this.gatewayOf(eventId);
    if (event && gateway) return this.acceptAtGateway(msg, signed, event, gateway);
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
    await notifyRound(this.deps, eventId, 'acceptance', acceptanceOutcomes(live, chosen));
    this.at(Date.parse(event.windowEnd) + this.grace, () => this.settle(eventId));
    // The same text for every acceptance: nothing in it depends on the bids or the households.
    return { status: 'accepted', requestId, message: 'acceptance recorded' };
  }

  /**
   * In a cluster: the DSM's acceptance at the round's gateway, checked as one TRE checks it but
   * against the union the gateway released, recorded here once, and forwarded to the shards that
   * sent bids (each credits and tells its own households). A repeat is forwarded again.
   */
  private async acceptAtGateway(
    msg: InboundMessage,
    signed: Extract<SignedRequest<Acceptance>, { ok: true }>,
    event: StoredEvent,
    gateway: string,
  ): Promise<HandlerResult> {
    const { dr, store } = this.deps;
    const { requestId, content: acceptance, jws } = signed;
    const { eventId, accepted } = acceptance;
    if (gateway !== this.deps.cluster?.shard || !this.gateway)
      return refusal(
        requestId,
        'EVENT_INVALID',
        `this event's round runs through shard ${gateway}; send the acceptance while connected there`,
      );
    const dsmKey = msg.from.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
    if (event.dsmId === acceptance.dsmId && dr.acceptanceOf(eventId) === jws) {
      await this.gateway.forward(event, jws, dsmKey);
      return { status: 'accepted', requestId, duplicate: true };
    }
    const released = this.gateway.released(event);
    const rejected = admit(acceptanceChecks, {
      acceptance,
      topicEventId: msg.topic.param,
      // Released to the DSM once the union is out, not when this shard's own deadline passed.
      event: event.stage === 'released' && !released ? { ...event, stage: 'open' } : event,
      live: released ? [...released.keys()].map((pseudonym) => ({ pseudonym })) : [],
      now: this.deps.clock.now(),
    });
    if (rejected) return refusal(requestId, rejected.reason, rejected.message);
    // Checked again inside the transaction: another acceptance (or a change) may have been committed meanwhile.
    const roundGateway = this.gateway;
    const recorded = await store.commit(() => {
      if (!dr.accept(eventId, jws)) return false;
      // In the same transaction: a restart after it still waits for the shards' compliance.
      roundGateway.expectReports(event, accepted);
      return true;
    });
    if (!recorded) {
      if (dr.acceptanceOf(eventId) === jws) return { status: 'accepted', requestId, duplicate: true };
      return refusal(requestId, 'REPLAYED', 'this event was already accepted; its pseudonyms are dead');
    }
    await this.gateway.forward(event, jws, dsmKey);
    // The gateway settles too: its (possibly empty) results are part of the one report.
    this.at(Date.parse(event.windowEnd) + this.grace, () => this.settle(eventId));
    return { status: 'accepted', requestId, message: 'acceptance recorded' };
  }

  /**
   * In a cluster: the DSM's acceptance forwarded by the round's gateway. Its signature is verified
   * here (the signed content, not the gateway, authorises the credits); this shard's live bids are
   * accepted or not and credited in one commit, once (a repeat finds none live), and its bidders told.
   */
  private async applyForwarded(from: string, body: unknown): Promise<void> {
    const { dr, store, log } = this.deps;
    const { eventId, revision, jws, dsmKey } = forwardedAcceptanceSchema.parse(body);
    const event = dr.event(eventId);
    if (event?.revision !== revision || dr.gatewayOf(eventId) !== from) {
      log.warn({ from }, 'a forwarded acceptance for no round of that gateway refused');
      return;
    }
    let acceptance: Acceptance;
    try {
      const key = createPublicKey({ key: Buffer.from(dsmKey, 'base64'), format: 'der', type: 'spki' });
      acceptance = await verifyContent('drAcceptance', jws, key, acceptanceSchema);
    } catch (err) {
      log.warn({ from, err: (err as Error).message }, 'a forwarded acceptance that does not verify refused');
      return;
    }
    if (acceptance.eventId !== eventId || acceptance.dsmId !== event.dsmId) {
      log.warn({ from }, 'a forwarded acceptance of another event or DSM refused');
      return;
    }
    const chosen = new Set(acceptance.accepted);
    const ref = drRef(eventId, revision);
    const windowStart = Date.parse(event.windowStart);
    const live = await store.commit((db) => {
      // The gateway recorded it first when it is this shard; a repeat finds no live bid left.
      const now = dr.event(eventId);
      if (now?.revision !== revision) return undefined;
      if (now.stage === 'released') dr.accept(eventId, jws);
      else if (now.stage !== 'accepted' || dr.acceptanceOf(eventId) !== jws) return undefined;
      const bids = dr.bidsOf(eventId, 'live');
      dr.markAccepted(eventId, acceptance.accepted);
      for (const b of bids)
        if (chosen.has(b.pseudonym)) postCredit(db, b.meter_id, ref, windowStart, b.quantity_wh, b.price);
      return bids;
    });
    if (!live) {
      log.warn({ from }, 'a forwarded acceptance of a round changed or accepted otherwise here refused');
      return;
    }
    if (live.length === 0) return;
    await notifyRound(this.deps, eventId, 'acceptance', acceptanceOutcomes(live, chosen));
    this.at(Date.parse(event.windowEnd) + this.grace, () => this.settle(eventId));
  }

  /** In a cluster: this shard's batch came after the gateway's release; its bids lapse, its bidders are told. */
  private async lapse(from: string, body: unknown): Promise<void> {
    const { dr, store, log } = this.deps;
    const { eventId, revision } = lateSchema.parse(body);
    if (dr.gatewayOf(eventId) !== from) {
      log.warn({ from }, 'a late notice from another shard than the round’s gateway refused');
      return;
    }
    const lapsed = await store.commit(() => {
      const event = dr.event(eventId);
      if (event?.revision !== revision || event.stage !== 'released') return [];
      const live = dr.bidsOf(eventId, 'live');
      dr.markAccepted(eventId, []);
      return live;
    });
    if (lapsed.length === 0) return;
    log.warn({ gateway: from }, 'bid batch late at the gateway: this shard’s bids lapsed');
    await notifyRound(this.deps, eventId, 'acceptance', acceptanceOutcomes(lapsed, new Set()));
  }

  /**
   * After the window: compliance per pseudonym to the DSM (in a cluster: this shard's results to
   * the round's gateway, which reports once), credit reversals, household outcomes.
   * Nothing before the grace after the window of the event's current terms. An overridden bid is
   * not delivered, whatever the readings.
   */
  async settle(eventId: string): Promise<void> {
    const { dr, store, outbound, cluster } = this.deps;
    const event = dr.event(eventId);
    if (event?.stage !== 'accepted') return;
    const [start, end] = [Date.parse(event.windowStart), Date.parse(event.windowEnd)];
    if (this.deps.clock.now() < end + this.grace) return;
    const thresholdMilli = this.options.deliveryThresholdMilli;
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
    const delivered = shuffled(results).map((r) => ({ pseudonym: r.bid.pseudonym, delivered: r.delivered }));
    const gateway = this.gatewayOf(eventId);
    if (gateway && cluster)
      await cluster.send(gateway, COMPLIANCE, { eventId, revision: event.revision, results: delivered });
    else
      await outbound.publish(
        topics.compliance(event.dsmId, eventId),
        JSON.stringify({ v: PROTOCOL_VERSION, eventId, results: delivered }),
      );
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
    this.gateway?.stop();
  }
}

/** Each live bid's outcome when the acceptance is recorded: accepted with its credit, or not. */
function acceptanceOutcomes(live: readonly BidRow[], chosen: ReadonlySet<string>) {
  return live.map((b) => {
    const ok = chosen.has(b.pseudonym);
    return {
      meterId: b.meter_id,
      bidId: b.bid_id,
      outcome: ok ? ('accepted' as const) : ('not-accepted' as const),
      ...(ok ? { creditMicroMinor: -b.quantity_wh * b.price } : {}),
    };
  });
}
