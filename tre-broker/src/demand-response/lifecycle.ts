/**
 * An event's lifecycle after it is raised, pure (no SQLite, no MQTT): what the DSM's cancellation
 * or modification may do in each stage, and the household's override of an accepted shed.
 *
 *   stage      cancel                               modify (new terms, bid deadline in the future)
 *   open       bids voided; cancelled               bids voided; next revision, open
 *   released   bids voided; cancelled               bids voided; next revision, open
 *   accepted   bids voided, credits compensated,    bids voided, credits compensated, households
 *              households told; cancelled           told; next revision, open
 *   settled    credits and reversals compensated,   credits and reversals compensated,
 *              households told; cancelled           households told; next revision, open
 *   cancelled  refused (REPLAYED)                   refused (REPLAYED)
 *
 * "Compensated" means exactly: each household's ledger lines of the revision sum to zero again
 * through one more line (billing/ledger.ts `postCompensation`), whether the shed was delivered or
 * not. A modification is the cancellation of the current revision and a new round under the new
 * terms and the same event id: agents decide again by their policy, bids get fresh pseudonyms.
 * Every message text depends only on what the DSM sent and its own event, never on households.
 */
import type { DrEvent, DrTerms } from '@tre/protocol';
import { admit, type Check, eventChecks, type Rejection } from './admission.js';
import type { BidRow, StoredEvent } from './dr-book.js';

export type Change = { kind: 'cancel' } | { kind: 'modify'; terms: DrTerms };

export interface ChangeRequest {
  change: Change;
  /** What the DSM signed besides the change. */
  signed: { eventId: string; dsmId: string; issuedAt: string };
  topicEventId: string | undefined;
  event: StoredEvent | undefined;
  now: number;
  /** Members of the event's target group, if it names one (undefined: no such group). */
  targetMembers: string[] | undefined;
}

const reject = (reason: Rejection['reason'], message: string): Rejection => ({ reason, message });

/** The event with the modification's terms (id, DSM and target group stay). */
export function modified(event: DrEvent, terms: DrTerms): DrEvent {
  return {
    v: event.v,
    eventId: event.eventId,
    dsmId: event.dsmId,
    windowStart: terms.windowStart ?? event.windowStart,
    windowEnd: terms.windowEnd ?? event.windowEnd,
    bidDeadline: terms.bidDeadline ?? event.bidDeadline,
    acceptBy: terms.acceptBy ?? event.acceptBy,
    requestedReductionWh: terms.requestedReductionWh ?? event.requestedReductionWh,
    priceCapPerMWh: terms.priceCapPerMWh ?? event.priceCapPerMWh,
    ...(event.targetGroup ? { targetGroup: event.targetGroup } : {}),
  };
}

/** An event's terms alone (a stored event without its stage, revision and change time). */
export const termsOf = (event: DrEvent): DrEvent => modified(event, {});

export const changeChecks: readonly Check<ChangeRequest>[] = [
  {
    name: 'event named by the topic',
    check: ({ signed, topicEventId, change }) =>
      topicEventId !== signed.eventId
        ? reject(
            'MALFORMED',
            `the signed ${change.kind} names another event than its topic; publish it on ${change.kind}/{its eventId}`,
          )
        : undefined,
  },
  {
    name: "the DSM's own event",
    check: ({ event, signed }) =>
      !event || event.dsmId !== signed.dsmId
        ? reject('UNKNOWN_EVENT', 'no such event of this DSM')
        : undefined,
  },
  {
    name: 'not cancelled',
    check: ({ event }) =>
      event!.stage === 'cancelled'
        ? reject('REPLAYED', 'this event was cancelled; raise a new event instead')
        : undefined,
  },
  {
    name: 'later than the last change',
    check: ({ event, signed }) =>
      Date.parse(signed.issuedAt) <= event!.changedAt
        ? reject(
            'REPLAYED',
            `a change of this event issued at or after ${signed.issuedAt} was already applied; sign a new one`,
          )
        : undefined,
  },
  {
    name: 'modified terms admissible as an event',
    check: ({ change, event, now, targetMembers }) => {
      if (change.kind !== 'modify') return undefined;
      const rejected = admit(eventChecks, { event: modified(event!, change.terms), now, targetMembers });
      if (!rejected) return undefined;
      return rejected.message === 'the bid deadline has passed'
        ? reject(
            'EVENT_INVALID',
            'the bid deadline has passed: a modification opens bidding again, so give a bidDeadline (and acceptBy and a window after it) in the future',
          )
        : reject(rejected.reason, `the modified event: ${rejected.message}`);
    },
  },
];

/** What an admitted change does to an event in `stage` (see the table above). */
export interface ChangePlan {
  /** Live, accepted and overridden bids are voided (their pseudonyms die). */
  voidBids: boolean;
  /** The revision's ledger lines are compensated and the accepted households told (a cancellation round). */
  compensate: boolean;
  next: 'cancelled' | 'next-revision';
}

export function planChange(stage: StoredEvent['stage'], change: Change): ChangePlan {
  const next = change.kind === 'cancel' ? 'cancelled' : 'next-revision';
  switch (stage) {
    case 'open':
    case 'released':
      return { voidBids: true, compensate: false, next };
    case 'accepted':
    case 'settled':
      return { voidBids: true, compensate: true, next };
    case 'cancelled':
      throw new Error('a cancelled event cannot change (changeChecks refuses it)');
  }
}

export interface OverrideRequest {
  override: { eventId: string; bidId: string };
  meterId: string;
  event: StoredEvent | undefined;
  bid: BidRow | undefined;
  now: number;
}

/** The household's override of its accepted shed: its texts name only the household's own bid. */
export const overrideChecks: readonly Check<OverrideRequest>[] = [
  {
    name: 'event exists',
    check: ({ event }) => (event ? undefined : reject('UNKNOWN_EVENT', 'no such demand-response event')),
  },
  {
    name: 'event accepted, not settled or cancelled',
    check: ({ event }) =>
      event!.stage !== 'accepted'
        ? reject('EVENT_INVALID', `the event is ${event!.stage}: only an accepted shed can be overridden`)
        : undefined,
  },
  {
    name: "the household's own accepted bid in this event",
    check: ({ bid, meterId, override }) =>
      !bid ||
      bid.meter_id !== meterId ||
      bid.event_id !== override.eventId ||
      (bid.status !== 'accepted' && bid.status !== 'overridden')
        ? reject('NOT_AUTHORIZED', 'this household has no accepted bid with this id in this event')
        : undefined,
  },
  {
    name: 'before the window ends',
    check: ({ event, now }) =>
      now >= Date.parse(event!.windowEnd)
        ? reject('EVENT_INVALID', 'the window is over; the bid settles from the readings')
        : undefined,
  },
];
