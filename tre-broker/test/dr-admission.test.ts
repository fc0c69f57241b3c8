/** Admission of DR events, bids and acceptances as named checks, without SQLite or MQTT. */
import type { DrEvent } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { acceptanceChecks, admit, bidChecks, eventChecks } from '../src/demand-response/admission.js';
import type { BidRow } from '../src/demand-response/dr-book.js';

const T = Date.UTC(2026, 6, 1, 8);
const iso = (ms: number) => new Date(T + ms).toISOString();
const event: DrEvent = {
  v: 1,
  eventId: 'e1',
  dsmId: 'x',
  bidDeadline: iso(60_000),
  acceptBy: iso(1_800_000),
  windowStart: iso(3_600_000),
  windowEnd: iso(7_200_000),
  requestedReductionWh: 1_000,
  priceCapPerMWh: 500,
};

describe('event admission', () => {
  const ok = { event, now: T, targetMembers: undefined };
  it('admits a well-formed event and names every refusal', () => {
    expect(admit(eventChecks, ok)).toBeUndefined();
    expect(admit(eventChecks, { ...ok, now: T + 60_000 })?.message).toBe('the bid deadline has passed');
    expect(admit(eventChecks, { ...ok, event: { ...event, windowStart: iso(0) } })?.message).toBe(
      'the window must start after the bid deadline',
    );
    for (const acceptBy of [iso(60_000), iso(30_000), iso(3_600_001)])
      expect(admit(eventChecks, { ...ok, event: { ...event, acceptBy } })?.message).toBe(
        'acceptBy must fall after the bid deadline and no later than the window start',
      );
    expect(admit(eventChecks, { ...ok, event: { ...event, acceptBy: iso(3_600_000) } })).toBeUndefined();
    expect(admit(eventChecks, { ...ok, event: { ...event, windowEnd: iso(3_600_000) } })?.message).toBe(
      'the window must end after it starts',
    );
    expect(
      admit(eventChecks, { ...ok, event: { ...event, windowEnd: iso(3_600_000 + 25 * 3_600_000) } })?.message,
    ).toBe('the window may last at most 24 hours');
    const targeted = { ...event, targetGroup: { dnoId: 'd', groupId: 'g' } };
    expect(admit(eventChecks, { ...ok, event: targeted })).toEqual({
      reason: 'EVENT_INVALID',
      message: 'unknown target group',
    });
    expect(admit(eventChecks, { ...ok, event: targeted, targetMembers: ['m'] })).toBeUndefined();
  });
});

describe('bid admission', () => {
  const open = { ...event, stage: 'open' as const };
  const ok = {
    bid: { quantityWh: 300, pricePerMWh: 400 },
    meterId: 'm1',
    event: open,
    now: T,
    targetMembers: undefined,
    sheddableWh: () => 500,
  };
  it('admits a bid within cap and sheddable bound; refuses in order', () => {
    expect(admit(bidChecks, ok)).toBeUndefined();
    expect(admit(bidChecks, { ...ok, event: undefined })?.reason).toBe('UNKNOWN_EVENT');
    expect(admit(bidChecks, { ...ok, now: T + 60_000 })?.reason).toBe('BID_DEADLINE_PASSED');
    expect(admit(bidChecks, { ...ok, event: { ...open, stage: 'released' as const } })?.reason).toBe(
      'BID_DEADLINE_PASSED',
    );
    expect(
      admit(bidChecks, {
        ...ok,
        event: { ...open, targetGroup: { dnoId: 'd', groupId: 'g' } },
        targetMembers: ['m2'],
      })?.reason,
    ).toBe('NOT_AUTHORIZED');
    expect(admit(bidChecks, { ...ok, bid: { quantityWh: 300, pricePerMWh: 501 } })?.reason).toBe(
      'ABOVE_PRICE_CAP',
    );
    expect(admit(bidChecks, { ...ok, bid: { quantityWh: 300, pricePerMWh: -1 } })?.reason).toBe(
      'ABOVE_PRICE_CAP',
    );
    expect(admit(bidChecks, { ...ok, bid: { quantityWh: 501, pricePerMWh: 400 } })).toEqual({
      reason: 'ABOVE_SHEDDABLE',
      message: 'at most 500 Wh can be shed in this window',
    });
    expect(admit(bidChecks, { ...ok, bid: { quantityWh: 0, pricePerMWh: 400 } })?.reason).toBe(
      'ABOVE_SHEDDABLE',
    );
  });

  it('does not compute the sheddable bound for a bid refused earlier', () => {
    let asked = 0;
    admit(bidChecks, {
      ...ok,
      now: T + 60_000,
      sheddableWh: () => {
        asked++;
        return 0;
      },
    });
    expect(asked).toBe(0);
  });
});

describe('acceptance admission', () => {
  const live: BidRow[] = ['p1', 'p2'].map((pseudonym, i) => ({
    bid_id: `b${i}`,
    event_id: 'e1',
    meter_id: `m${i}`,
    quantity_wh: 100,
    price: 1,
    pseudonym,
    status: 'live',
  }));
  const ok = {
    acceptance: { eventId: 'e1', dsmId: 'x', accepted: ['p1'] },
    topicEventId: 'e1',
    event: { ...event, stage: 'released' as const },
    live,
    now: T + 120_000,
  };
  const as = (accepted: string[]) => ({ ...ok, acceptance: { ...ok.acceptance, accepted } });
  it('admits released pseudonyms once each before acceptBy; refuses in order', () => {
    expect(admit(acceptanceChecks, ok)).toBeUndefined();
    expect(admit(acceptanceChecks, as([]))).toBeUndefined();
    expect(admit(acceptanceChecks, { ...ok, topicEventId: 'e2' })?.reason).toBe('MALFORMED');
    expect(admit(acceptanceChecks, { ...ok, acceptance: { ...ok.acceptance, dsmId: 'y' } })?.reason).toBe(
      'UNKNOWN_EVENT',
    );
    expect(admit(acceptanceChecks, { ...ok, event: undefined })?.reason).toBe('UNKNOWN_EVENT');
    expect(admit(acceptanceChecks, { ...ok, event: { ...ok.event, stage: 'open' as const } })?.reason).toBe(
      'EVENT_INVALID',
    );
    for (const stage of ['accepted', 'settled'] as const)
      expect(admit(acceptanceChecks, { ...ok, event: { ...ok.event, stage } })?.reason).toBe('REPLAYED');
    expect(admit(acceptanceChecks, { ...ok, now: T + 1_800_000 - 1 })).toBeUndefined();
    expect(admit(acceptanceChecks, { ...ok, now: T + 1_800_000 })).toEqual({
      reason: 'ACCEPTANCE_DEADLINE_PASSED',
      message: `the acceptance deadline (acceptBy ${iso(1_800_000)}) has passed; no bid of this event can be accepted`,
    });
    expect(admit(acceptanceChecks, { ...ok, now: T + 9_000_000 })?.reason).toBe('ACCEPTANCE_DEADLINE_PASSED');
    expect(admit(acceptanceChecks, as(['p1', 'p1']))?.message).toBe(
      'a pseudonym is listed twice; list each accepted pseudonym once',
    );
    expect(admit(acceptanceChecks, as(['p1', 'p9', 'p8']))?.message).toBe(
      "pseudonym p9 is not in this event's bids message; accept only pseudonyms released for it",
    );
  });

  it('refusal texts depend only on what the DSM sent and was sent, not on households', () => {
    // Same DSM view (event, released pseudonyms, its acceptance), different households behind it.
    const other = live.map((b, i) => ({ ...b, bid_id: `z${i}`, meter_id: `other-${i}`, quantity_wh: 7 }));
    for (const accepted of [['p1', 'p1'], ['p1', 'p9'], ['p2']])
      expect(admit(acceptanceChecks, { ...as(accepted), live: other })).toEqual(
        admit(acceptanceChecks, as(accepted)),
      );
  });
});
