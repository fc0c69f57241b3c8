/** The DR lifecycle rules, without SQLite or MQTT: what a change does in each stage, and who may change what. */
import type { DrEvent } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { admit } from '../src/demand-response/admission.js';
import type { BidRow, StoredEvent } from '../src/demand-response/dr-book.js';
import {
  type ChangeRequest,
  changeChecks,
  modified,
  overrideChecks,
  planChange,
} from '../src/demand-response/lifecycle.js';
import { settleOverridden } from '../src/demand-response/settlement.js';

const T = Date.UTC(2026, 2, 18, 12);
const H = 3_600_000;
const iso = (t: number) => new Date(t).toISOString();
const terms: DrEvent = {
  v: 1,
  eventId: 'e1',
  dsmId: 'x1',
  windowStart: iso(T + 6 * H),
  windowEnd: iso(T + 7 * H),
  bidDeadline: iso(T + 4 * H),
  acceptBy: iso(T + 5 * H),
  requestedReductionWh: 1_000,
  priceCapPerMWh: 400_000,
};
const stored = (over: Partial<StoredEvent> = {}): StoredEvent => ({
  ...terms,
  stage: 'open',
  revision: 0,
  changedAt: 0,
  ...over,
});
const request = (over: Partial<ChangeRequest> = {}): ChangeRequest => ({
  change: { kind: 'cancel' },
  signed: { eventId: 'e1', dsmId: 'x1', issuedAt: iso(T) },
  topicEventId: 'e1',
  event: stored(),
  now: T,
  targetMembers: undefined,
  ...over,
});

describe('planChange', () => {
  it('voids bids in every stage; compensates credits only once bids were accepted', () => {
    expect(planChange('open', { kind: 'cancel' })).toEqual({
      voidBids: true,
      compensate: false,
      next: 'cancelled',
    });
    expect(planChange('released', { kind: 'cancel' })).toEqual({
      voidBids: true,
      compensate: false,
      next: 'cancelled',
    });
    expect(planChange('accepted', { kind: 'cancel' })).toEqual({
      voidBids: true,
      compensate: true,
      next: 'cancelled',
    });
    expect(planChange('settled', { kind: 'modify', terms: { priceCapPerMWh: 1 } })).toEqual({
      voidBids: true,
      compensate: true,
      next: 'next-revision',
    });
    expect(() => planChange('cancelled', { kind: 'cancel' })).toThrow();
  });
});

describe('changeChecks', () => {
  it('admits the owner DSM’s later change of a live event', () => {
    expect(admit(changeChecks, request())).toBeUndefined();
  });

  it('refuses another DSM, an unknown event, another topic, a cancelled event, an older change', () => {
    expect(
      admit(changeChecks, request({ signed: { eventId: 'e1', dsmId: 'x2', issuedAt: iso(T) } })),
    ).toMatchObject({
      reason: 'UNKNOWN_EVENT',
    });
    expect(admit(changeChecks, request({ event: undefined }))).toMatchObject({ reason: 'UNKNOWN_EVENT' });
    expect(admit(changeChecks, request({ topicEventId: 'e2' }))).toMatchObject({ reason: 'MALFORMED' });
    expect(admit(changeChecks, request({ event: stored({ stage: 'cancelled' }) }))).toMatchObject({
      reason: 'REPLAYED',
    });
    expect(admit(changeChecks, request({ event: stored({ changedAt: T }) }))).toMatchObject({
      reason: 'REPLAYED',
    });
  });

  it('checks modified terms as a new event: bidding must open again', () => {
    const modify = (t: object, now = T) =>
      admit(
        changeChecks,
        request({ change: { kind: 'modify', terms: t }, now, event: stored({ stage: 'settled' }) }),
      );
    expect(modify({ priceCapPerMWh: 300_000 }, T + 8 * H)).toMatchObject({
      reason: 'EVENT_INVALID',
      message: /opens bidding again/,
    });
    expect(
      modify(
        {
          bidDeadline: iso(T + 30 * H),
          acceptBy: iso(T + 31 * H),
          windowStart: iso(T + 32 * H),
          windowEnd: iso(T + 33 * H),
        },
        T + 8 * H,
      ),
    ).toBeUndefined();
    expect(modify({ windowEnd: iso(T + 5 * H) })).toMatchObject({
      reason: 'EVENT_INVALID',
      message: /modified event/,
    });
    expect(modified(terms, { priceCapPerMWh: 1 })).toEqual({ ...terms, priceCapPerMWh: 1 });
  });
});

describe('overrideChecks', () => {
  const bid: BidRow = {
    bid_id: 'bid-00000001',
    event_id: 'e1',
    meter_id: 'h1',
    quantity_wh: 600,
    price: 300_000,
    pseudonym: 'p'.repeat(22),
    status: 'accepted',
  };
  const req = (over: object = {}) => ({
    override: { eventId: 'e1', bidId: bid.bid_id },
    meterId: 'h1',
    event: stored({ stage: 'accepted' }),
    bid,
    now: T + 6 * H,
    ...over,
  });
  it('admits the household’s own accepted bid before the window ends, nothing else', () => {
    expect(admit(overrideChecks, req())).toBeUndefined();
    expect(admit(overrideChecks, req({ meterId: 'h2' }))).toMatchObject({ reason: 'NOT_AUTHORIZED' });
    expect(admit(overrideChecks, req({ bid: { ...bid, status: 'rejected' } }))).toMatchObject({
      reason: 'NOT_AUTHORIZED',
    });
    expect(admit(overrideChecks, req({ event: stored({ stage: 'cancelled' }) }))).toMatchObject({
      reason: 'EVENT_INVALID',
    });
    expect(admit(overrideChecks, req({ now: T + 7 * H }))).toMatchObject({ reason: 'EVENT_INVALID' });
    expect(admit(overrideChecks, req({ event: undefined }))).toMatchObject({ reason: 'UNKNOWN_EVENT' });
  });
  it('an overridden bid settles as not delivered, its whole credit reversed', () => {
    expect(settleOverridden({ quantityWh: 600, pricePerMWh: 300_000 })).toEqual({
      delivered: false,
      keepMilli: 0,
      reversalMicro: 180_000_000,
    });
  });
});
