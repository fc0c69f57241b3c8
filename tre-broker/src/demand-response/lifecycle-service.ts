/**
 * The DR event lifecycle after it is raised (service; the rules are lifecycle.ts):
 *  - cancel (`dsm/{x}/cancel/{e}`) and modify (`dsm/{x}/modify/{e}`), signed by the event's DSM
 *    (JWS `tre-dr-cancel+jws`, `tre-dr-modify+jws`), ordered by their `issuedAt`: in one
 *    transaction the event is changed (its replaced revision kept as history), its bids voided and,
 *    once bids were accepted, each accepted household's DR lines of the revision compensated
 *    exactly; then the TRE-signed announcement (cancelled, or the next revision's terms) goes to
 *    every household on the event's broadcast, and the accepted households get a signed
 *    cancellation round with their compensating line. The DSM's receipt is a fixed text.
 *  - override (`meter/{m}/override`, the household's certificate): the household took its
 *    accepted shed back; the bid is marked and settles as not delivered (no credit), told to the
 *    DSM only in the compliance report after the window, like any other failed delivery.
 *
 * What a curious DSM learns from all this: nothing it did not know. A change's receipt says only
 * `event cancelled` / `event modified (revision n)`; the voiding goes to households on the public
 * broadcast and their own inboxes, never through the DSM, and no message to the DSM counts voided
 * bids, accepted households or overrides. After a modification it gets a new bids message (fresh
 * pseudonyms, unlinkable to the earlier ones except by equal quantity and price, as across any two
 * events) and, if it accepts, a compliance report. An override reaches it only as `delivered:
 * false` for one pseudonym in the compliance report at the usual time (grace after the window),
 * indistinguishable from a shed that did not deliver; the time of the override is never sent.
 *
 * In a cluster of shards every shard applies a change to its own households' bids and credits (the
 * change is replicated to it); a modification moves the next round to the shard the DSM is then
 * connected to, and the current round's gateway forgets the round (`changed`). An override stays
 * in the household's shard: it reaches the DSM through that shard's compliance results.
 */
import {
  type DrAnnouncement,
  type DrTerms,
  decodePayload,
  drCancelSchema,
  drModifySchema,
  drOverrideSchema,
  PROTOCOL_VERSION,
} from '@tre/protocol';
import { drLinesNet, drRef, postCompensation } from '../billing/ledger.js';
import { type HandlerResult, type InboundMessage, refusal, refusalOf } from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import type { FlowBase } from '../flow-base.js';
import { admit } from './admission.js';
import type { BidRow, DrBook } from './dr-book.js';
import { announce, clearAnnouncement, notifyRound } from './household-notices.js';
import { type Change, changeChecks, modified, overrideChecks, planChange, termsOf } from './lifecycle.js';

export interface DrLifecycleDeps
  extends Pick<FlowBase, 'store' | 'router' | 'outbound' | 'clock' | 'log' | 'signingKey' | 'cluster'> {
  dr: DrBook;
  groupMembers: (dnoId: string, groupId: string) => string[] | undefined;
  /** Runs `fn` at clock time `t` (the DR service's timers). */
  at: (t: number, fn: () => Promise<unknown>) => void;
  /** Releases an event's bids (the DR service's; it does nothing before the event's bid deadline). */
  release: (eventId: string) => Promise<void>;
  /** Told after a change was applied (the round gateway forgets the event's rounds). */
  changed?: (eventId: string) => void;
}

export class DrLifecycle {
  readonly stats = { cancelled: 0, modified: 0, overridden: 0 };

  constructor(private readonly deps: DrLifecycleDeps) {}

  start(): void {
    const { router } = this.deps;
    router.on('cancel', (m) => this.handleChange(m, 'cancel'));
    router.on('modify', (m) => this.handleChange(m, 'modify'));
    router.on('override', (m) => this.handleOverride(m));
  }

  private async verified(msg: InboundMessage, kind: Change['kind']) {
    if (kind === 'cancel') {
      const signed = await verifySignedRequest(msg, 'drCancel', drCancelSchema, (c) => c.dsmId);
      return signed.ok ? { ...signed, change: { kind } as Change } : signed;
    }
    const signed = await verifySignedRequest(msg, 'drModify', drModifySchema, (c) => c.dsmId);
    return signed.ok
      ? { ...signed, change: { kind, terms: signed.content.terms as DrTerms } as Change }
      : signed;
  }

  private async handleChange(msg: InboundMessage, kind: Change['kind']): Promise<HandlerResult> {
    const { dr, store, clock } = this.deps;
    const signed = await this.verified(msg, kind);
    if (!signed.ok) return signed.refusal;
    const { requestId, content, jws, change } = signed;
    const eventId = content.eventId;
    const event = msg.topic.param === eventId ? dr.event(eventId) : undefined;
    if (event?.dsmId === content.dsmId && dr.changeOf(eventId) === jws)
      return { status: 'accepted', requestId, duplicate: true };
    const now = clock.now();
    const rejected = admit(changeChecks, {
      change,
      signed: content,
      topicEventId: msg.topic.param,
      event,
      now,
      targetMembers:
        event?.targetGroup && this.deps.groupMembers(event.targetGroup.dnoId, event.targetGroup.groupId),
    });
    if (rejected) return refusal(requestId, rejected.reason, rejected.message);
    if (!event) throw new Error('change admitted without its event'); // the checks require it
    const plan = planChange(event.stage, change);
    const next = change.kind === 'modify' ? modified(event, change.terms) : undefined;
    const ref = drRef(eventId, event.revision);
    const done = await store.commit((db) => {
      // Checked again inside the transaction: another change may have been committed meanwhile.
      const accepted = plan.compensate
        ? [...dr.bidsOf(eventId, 'accepted'), ...dr.bidsOf(eventId, 'overridden')]
        : [];
      if (
        !dr.change(eventId, event.revision, {
          issuedAt: Date.parse(content.issuedAt),
          jws,
          ...(next ? { next } : {}),
          // In a cluster the next round runs through the shard the DSM is connected to now.
          gateway: this.deps.cluster && (msg.via ?? this.deps.cluster.shard),
        })
      )
        return undefined;
      const compensation = new Map<string, number>();
      if (plan.compensate)
        for (const line of drLinesNet(db, ref)) {
          postCompensation(db, line.meterId, ref, line.intervalStart, -line.micro);
          compensation.set(line.meterId, -line.micro);
        }
      if (plan.voidBids) dr.voidBids(eventId);
      return { accepted, compensation };
    });
    if (!done) {
      if (dr.changeOf(eventId) === jws) return { status: 'accepted', requestId, duplicate: true };
      return refusal(requestId, 'REPLAYED', 'another change of this event was applied first; sign a new one');
    }
    this.deps.changed?.(eventId);
    await this.tellHouseholds(event, next, done.accepted, done.compensation);
    if (next) {
      this.stats.modified++;
      this.deps.at(Date.parse(next.bidDeadline), () => this.deps.release(eventId));
      return { status: 'accepted', requestId, message: `event modified (revision ${event.revision + 1})` };
    }
    this.stats.cancelled++;
    return { status: 'accepted', requestId, message: 'event cancelled' };
  }

  /**
   * Every household by the broadcast (the next revision's terms, retained until its bid deadline;
   * or the cancellation, retained until the window's end, so an agent reconnecting before then
   * still hears of it), and the accepted households by a signed cancellation round with their
   * compensating line.
   */
  private async tellHouseholds(
    event: DrAnnouncement['event'] & { revision: number },
    next: DrAnnouncement['event'] | undefined,
    accepted: readonly BidRow[],
    compensation: ReadonlyMap<string, number>,
  ): Promise<void> {
    const now = this.deps.clock.now();
    const revision = event.revision;
    if (next) {
      await announce(
        this.deps,
        { v: PROTOCOL_VERSION, event: next, expiresAt: next.bidDeadline, revision: revision + 1 },
        true,
      );
    } else {
      const windowEnd = Date.parse(event.windowEnd);
      const keep = windowEnd > now;
      await announce(
        this.deps,
        {
          v: PROTOCOL_VERSION,
          event: termsOf(event),
          expiresAt: new Date(Math.max(now, windowEnd)).toISOString(),
          revision,
          cancelled: true,
        },
        keep,
      );
      if (keep) this.deps.at(windowEnd, () => clearAnnouncement(this.deps, event.eventId));
    }
    await notifyRound(
      this.deps,
      event.eventId,
      'cancellation',
      accepted.map((b) => {
        const credit = compensation.get(b.meter_id);
        return {
          meterId: b.meter_id,
          bidId: b.bid_id,
          outcome: 'cancelled',
          ...(credit ? { creditMicroMinor: credit } : {}),
        };
      }),
    );
  }

  /** The household takes back its accepted shed: the bid settles as not delivered. */
  private async handleOverride(msg: InboundMessage): Promise<HandlerResult> {
    const { dr, store, clock } = this.deps;
    const decoded = decodePayload(msg.payload, drOverrideSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, eventId, bidId } = decoded.value;
    const meterId = msg.from.id;
    const rejected = admit(overrideChecks, {
      override: { eventId, bidId },
      meterId,
      event: dr.event(eventId),
      bid: dr.bid(bidId),
      now: clock.now(),
    });
    if (rejected) return refusal(requestId, rejected.reason, rejected.message);
    const was = await store.commit(() => {
      // Checked again inside the transaction: the event may have been cancelled meanwhile.
      const status = dr.bid(bidId)?.status;
      if (status === 'accepted') dr.markBid(bidId, 'overridden');
      return status;
    });
    if (was === 'overridden') return { status: 'accepted', requestId, duplicate: true };
    if (was !== 'accepted')
      return refusal(
        requestId,
        'NOT_AUTHORIZED',
        'this household has no accepted bid with this id in this event',
      );
    this.stats.overridden++;
    return { status: 'accepted', requestId, message: 'override recorded; this bid settles as not delivered' };
  }
}
