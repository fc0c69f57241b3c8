/**
 * Admission of DR events, bids and acceptances as lists of named checks run in order (the shape of
 * aedes' `connectActions`): each check looks at the request and what the TRE knows, and returns
 * the refusal that stops the chain, or nothing. Pure: no SQLite, no MQTT.
 */
import type { DrEvent, RefusalReason } from '@tre/protocol';
import type { BidRow, EventStage } from './dr-book.js';

export interface Rejection {
  reason: RefusalReason;
  message: string;
}

export type Check<T> = { name: string; check: (input: T) => Rejection | undefined };

/** The first rejection of `checks` for `input`, or undefined when all pass. */
export function admit<T>(checks: readonly Check<T>[], input: T): Rejection | undefined {
  for (const { check } of checks) {
    const rejection = check(input);
    if (rejection) return rejection;
  }
  return undefined;
}

const reject = (reason: RefusalReason, message: string): Rejection => ({ reason, message });

export interface EventRequest {
  event: DrEvent;
  now: number;
  /** Members of the event's target group, if it names one (undefined: no such group). */
  targetMembers: string[] | undefined;
}

export const eventChecks: readonly Check<EventRequest>[] = [
  {
    name: 'deadline in the future',
    check: ({ event, now }) =>
      Date.parse(event.bidDeadline) <= now
        ? reject('EVENT_INVALID', 'the bid deadline has passed')
        : undefined,
  },
  {
    name: 'window after the deadline',
    check: ({ event }) =>
      Date.parse(event.windowStart) < Date.parse(event.bidDeadline)
        ? reject('EVENT_INVALID', 'the window must start after the bid deadline')
        : undefined,
  },
  {
    name: 'acceptance deadline between the bid deadline and the window',
    check: ({ event }) =>
      Date.parse(event.acceptBy) <= Date.parse(event.bidDeadline) ||
      Date.parse(event.acceptBy) > Date.parse(event.windowStart)
        ? reject(
            'EVENT_INVALID',
            'acceptBy must fall after the bid deadline and no later than the window start',
          )
        : undefined,
  },
  {
    name: 'window ends after it starts',
    check: ({ event }) =>
      Date.parse(event.windowEnd) <= Date.parse(event.windowStart)
        ? reject('EVENT_INVALID', 'the window must end after it starts')
        : undefined,
  },
  {
    name: 'window at most a day',
    check: ({ event }) =>
      Date.parse(event.windowEnd) - Date.parse(event.windowStart) > 24 * 3_600_000
        ? reject('EVENT_INVALID', 'the window may last at most 24 hours')
        : undefined,
  },
  {
    name: 'target group exists',
    check: ({ event, targetMembers }) =>
      event.targetGroup && !targetMembers ? reject('EVENT_INVALID', 'unknown target group') : undefined,
  },
];

export interface BidRequest {
  bid: { quantityWh: number; pricePerMWh: number };
  meterId: string;
  event: (DrEvent & { stage: EventStage }) | undefined;
  now: number;
  targetMembers: string[] | undefined;
  /** At most this much can be shed in the window (see `sheddableWh`). */
  sheddableWh: () => number;
}

export const bidChecks: readonly Check<BidRequest>[] = [
  {
    name: 'event exists',
    check: ({ event }) => (event ? undefined : reject('UNKNOWN_EVENT', 'no such demand-response event')),
  },
  {
    name: 'not cancelled',
    check: ({ event }) =>
      event!.stage === 'cancelled' ? reject('EVENT_INVALID', 'this event was cancelled') : undefined,
  },
  {
    name: 'before the deadline',
    check: ({ event, now }) =>
      event!.stage !== 'open' || now >= Date.parse(event!.bidDeadline)
        ? reject('BID_DEADLINE_PASSED', 'the bid deadline has passed')
        : undefined,
  },
  {
    name: 'household in the target group',
    check: ({ event, targetMembers, meterId }) =>
      event!.targetGroup && !targetMembers?.includes(meterId)
        ? reject('NOT_AUTHORIZED', 'this household is not in the event’s target group')
        : undefined,
  },
  {
    name: 'within the price cap',
    check: ({ bid, event }) =>
      bid.pricePerMWh < 0 || bid.pricePerMWh > event!.priceCapPerMWh
        ? reject('ABOVE_PRICE_CAP', `the price cap is ${event!.priceCapPerMWh} per MWh`)
        : undefined,
  },
  {
    name: 'within what can be shed',
    check: ({ bid, sheddableWh }) => {
      const sheddable = sheddableWh();
      return bid.quantityWh <= 0 || bid.quantityWh > sheddable
        ? reject('ABOVE_SHEDDABLE', `at most ${sheddable} Wh can be shed in this window`)
        : undefined;
    },
  },
];

export interface AcceptanceRequest {
  /** What the DSM signed. */
  acceptance: { eventId: string; dsmId: string; accepted: readonly string[] };
  topicEventId: string | undefined;
  event: (DrEvent & { stage: EventStage }) | undefined;
  /** The released pseudo-bids still open (in a cluster: the union the gateway released). */
  live: readonly Pick<BidRow, 'pseudonym'>[];
  now: number;
}

/**
 * Every message text depends only on what the DSM sent and what it was sent (its event, the
 * released pseudo-bids, the time), never on households.
 */
export const acceptanceChecks: readonly Check<AcceptanceRequest>[] = [
  {
    name: 'event named by the topic',
    check: ({ acceptance, topicEventId }) =>
      topicEventId !== acceptance.eventId
        ? reject(
            'MALFORMED',
            'the signed acceptance names another event than its topic; publish it on accept/{its eventId}',
          )
        : undefined,
  },
  {
    name: "the DSM's own event",
    check: ({ event, acceptance }) =>
      !event || event.dsmId !== acceptance.dsmId
        ? reject('UNKNOWN_EVENT', 'no such event of this DSM')
        : undefined,
  },
  {
    name: 'not cancelled',
    check: ({ event }) =>
      event!.stage === 'cancelled'
        ? reject('EVENT_INVALID', 'this event was cancelled; nothing of it can be accepted')
        : undefined,
  },
  {
    name: 'bids released',
    check: ({ event }) =>
      event!.stage === 'open'
        ? reject('EVENT_INVALID', 'the bids have not been released yet; accept after the bids message')
        : undefined,
  },
  {
    name: 'not accepted before',
    check: ({ event }) =>
      event!.stage !== 'released'
        ? reject('REPLAYED', 'this event was already accepted; its pseudonyms are dead')
        : undefined,
  },
  {
    name: 'before the acceptance deadline',
    check: ({ event, now }) =>
      now >= Date.parse(event!.acceptBy)
        ? reject(
            'ACCEPTANCE_DEADLINE_PASSED',
            `the acceptance deadline (acceptBy ${event!.acceptBy}) has passed; no bid of this event can be accepted`,
          )
        : undefined,
  },
  {
    name: 'each pseudonym once',
    check: ({ acceptance }) =>
      new Set(acceptance.accepted).size !== acceptance.accepted.length
        ? reject('UNKNOWN_PSEUDONYM', 'a pseudonym is listed twice; list each accepted pseudonym once')
        : undefined,
  },
  {
    name: 'only released pseudonyms',
    check: ({ acceptance, live }) => {
      const released = new Set(live.map((b) => b.pseudonym));
      const unknown = acceptance.accepted.find((p) => !released.has(p));
      return unknown !== undefined
        ? reject(
            'UNKNOWN_PSEUDONYM',
            `pseudonym ${unknown} is not in this event's bids message; accept only pseudonyms released for it`,
          )
        : undefined;
    },
  },
];
