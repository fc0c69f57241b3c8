/** The shipped example policies against a few events (Europe/London; 2026-01-14 is a Wednesday). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { decide } from '../src/decide.js';
import type { DecisionContextInput } from '../src/decision-context.js';
import type { DrEvent } from '../src/dr-event.js';
import { parsePolicy } from '../src/validate.js';

const example = (name: string) =>
  parsePolicy(readFileSync(new URL(`../examples/${name}.yaml`, import.meta.url), 'utf8'), `${name}.yaml`);
const flatEv = example('flat-ev');
const house = example('house-heat-pump');
const never = example('never');

/** A winter weekday evening event, 17:00-19:00 UTC (= London local time in winter). */
const evening: DrEvent = {
  eventId: 'ev-1',
  windowStart: '2026-01-14T17:00:00Z',
  windowEnd: '2026-01-14T19:00:00Z',
  bidDeadline: '2026-01-14T16:00:00Z',
  requestedReductionWh: 50_000,
  priceCapPerMWh: 30_000,
};
const london: DecisionContextInput = { timeZone: 'Europe/London', now: '2026-01-14T15:00:00Z' };

describe('flat with an EV charger', () => {
  it('bids its per-event maximum by pausing the charger for an hour', () => {
    expect(decide(flatEv, evening, london)).toEqual({
      kind: 'bid',
      eventId: 'ev-1',
      bid: {
        quantityWh: 7400,
        pricePerMWh: 15_000,
        loads: [
          {
            name: 'ev-charger',
            actuator: 'relay:17',
            from: '2026-01-14T17:00:00Z',
            to: '2026-01-14T18:00:00Z',
          },
        ],
      },
      requiresApproval: false,
      limitedBy: 'per-event',
      // 17:00-18:30 (90 min at most) and, after 15 min back on, 18:45-19:00.
      sheddableWh: 11_100 + 1_850,
      skippedLoads: [],
    });
  });

  it('offers only what is left of the daily maximum', () => {
    const d = decide(flatEv, evening, { ...london, committedTodayWh: 8000 });
    expect(d).toMatchObject({
      kind: 'bid',
      limitedBy: 'per-day',
      bid: { quantityWh: 3100, loads: [{ from: '2026-01-14T17:00:00Z', to: '2026-01-14T17:26:00Z' }] },
    });
    expect(decide(flatEv, evening, { ...london, committedTodayWh: 11_100 })).toMatchObject({
      kind: 'no-bid',
      code: 'daily-limit-reached',
    });
  });

  it('does not bid below its minimum price', () => {
    expect(decide(flatEv, { ...evening, priceCapPerMWh: 14_999 }, london)).toEqual({
      kind: 'no-bid',
      eventId: 'ev-1',
      code: 'price-below-minimum',
      reason: "the event pays at most 14999 per MWh, below this household's minimum of 15000 per MWh",
      skippedLoads: [],
    });
  });

  it('never sheds on Sunday evening (blocked hours) nor outside its allowed windows', () => {
    const sunday = {
      ...evening,
      windowStart: '2026-01-18T18:00:00Z',
      windowEnd: '2026-01-18T20:00:00Z',
      bidDeadline: '2026-01-18T17:00:00Z',
    };
    expect(decide(flatEv, sunday, { ...london, now: '2026-01-18T12:00:00Z' })).toMatchObject({
      kind: 'no-bid',
      code: 'no-sheddable-load',
      skippedLoads: [{ name: 'ev-charger', code: 'no-allowed-time' }],
    });
    const morning = {
      ...evening,
      windowStart: '2026-01-14T07:00:00Z',
      windowEnd: '2026-01-14T09:00:00Z',
      bidDeadline: '2026-01-14T06:00:00Z',
    };
    expect(decide(flatEv, morning, { ...london, now: '2026-01-14T05:00:00Z' })).toMatchObject({
      code: 'no-sheddable-load',
    });
  });

  it('uses local time: in summer 15:00-16:00 UTC is 16:00-17:00 in London, allowed; 14:00-15:00 UTC is not', () => {
    const summer = (h: number): DrEvent => ({
      ...evening,
      windowStart: `2026-07-15T${h}:00:00Z`,
      windowEnd: `2026-07-15T${h + 1}:00:00Z`,
      bidDeadline: '2026-07-15T12:00:00Z',
    });
    const ctx = { ...london, now: '2026-07-15T10:00:00Z' };
    expect(decide(flatEv, summer(15), ctx)).toMatchObject({ kind: 'bid', bid: { quantityWh: 7400 } });
    expect(decide(flatEv, summer(14), ctx)).toMatchObject({ kind: 'no-bid', code: 'no-sheddable-load' });
    expect(decide(flatEv, summer(14), { ...ctx, timeZone: 'UTC' })).toMatchObject({ kind: 'no-bid' });
    expect(decide(flatEv, summer(16), { ...ctx, timeZone: 'UTC' })).toMatchObject({ kind: 'bid' });
  });

  it('does not bid after the deadline, nor when the charger is unavailable', () => {
    expect(decide(flatEv, evening, { ...london, now: '2026-01-14T16:00:00Z' })).toMatchObject({
      code: 'bid-deadline-passed',
      reason: 'bids closed at 2026-01-14T16:00:00Z; it is 2026-01-14T16:00:00Z',
    });
    expect(decide(flatEv, evening, { ...london, loads: { 'ev-charger': { state: 'unavailable' } } })).toEqual(
      {
        kind: 'no-bid',
        eventId: 'ev-1',
        code: 'no-sheddable-load',
        reason:
          'no load may be shed between 2026-01-14T17:00:00Z and 2026-01-14T19:00:00Z: ev-charger is reported unavailable',
        skippedLoads: [
          { name: 'ev-charger', code: 'load-unavailable', message: 'ev-charger is reported unavailable' },
        ],
      },
    );
  });
});

describe('house with a heat pump and a washing machine (ask-first)', () => {
  it('sheds the heat pump until 18:00 (blocked 18:00-20:00) and the washing machine for the rest', () => {
    expect(decide(house, { ...evening, requestedReductionWh: 10_000 }, london)).toEqual({
      kind: 'bid',
      eventId: 'ev-1',
      bid: {
        quantityWh: 3000,
        pricePerMWh: 20_000,
        loads: [
          {
            name: 'heat-pump',
            actuator: 'relay:5',
            from: '2026-01-14T17:00:00Z',
            to: '2026-01-14T18:00:00Z',
          },
          {
            name: 'washing-machine',
            actuator: 'plug:laundry',
            from: '2026-01-14T17:00:00Z',
            to: '2026-01-14T17:50:00Z',
          },
        ],
      },
      requiresApproval: true,
      limitedBy: 'per-event',
      sheddableWh: 2000 + 2400,
      skippedLoads: [],
    });
  });

  it('never sheds the heat pump while the living room is below 19.5 °C', () => {
    const cold = { ...london, sensors: { 'living-room': { celsius: 19.4, at: '2026-01-14T14:50:00Z' } } };
    expect(decide(house, evening, cold)).toMatchObject({
      kind: 'bid',
      limitedBy: 'loads',
      bid: {
        quantityWh: 2400,
        loads: [{ name: 'washing-machine', from: '2026-01-14T17:00:00Z', to: '2026-01-14T19:00:00Z' }],
      },
      skippedLoads: [
        {
          name: 'heat-pump',
          code: 'comfort-temperature',
          message: 'heat-pump is not shed: sensor living-room reads 19.4 °C, below the minimum of 19.5 °C',
        },
      ],
    });
    // A reading older than an hour is no reading: the rule does not apply.
    const stale = { ...london, sensors: { 'living-room': { celsius: 17, at: '2026-01-14T13:30:00Z' } } };
    expect(decide(house, evening, stale)).toMatchObject({ kind: 'bid', bid: { quantityWh: 3000 } });
  });

  it('keeps a heat pump that just came on running for its minimum on-time', () => {
    const later = decide(
      house,
      { ...evening, bidDeadline: '2026-01-14T17:00:00Z' },
      {
        ...london,
        now: '2026-01-14T16:55:00Z',
        loads: {
          'heat-pump': { state: 'on', since: '2026-01-14T16:50:00Z' },
          'washing-machine': { state: 'unavailable' },
        },
      },
    );
    expect(later).toMatchObject({
      kind: 'bid',
      bid: {
        quantityWh: 1333,
        loads: [{ name: 'heat-pump', from: '2026-01-14T17:20:00Z', to: '2026-01-14T18:00:00Z' }],
      },
    });
  });

  it('offers no more than recent consumption over the window', () => {
    const recent = [
      { intervalStart: '2026-01-13T17:00:00Z', intervalMinutes: 30, energyWh: 300 },
      { intervalStart: '2026-01-13T17:30:00Z', intervalMinutes: 30, energyWh: 300 },
    ];
    expect(decide(house, evening, { ...london, recentConsumption: recent })).toMatchObject({
      kind: 'bid',
      limitedBy: 'baseline',
      bid: { quantityWh: 1200 },
    });
    const idle = recent.map((r) => ({ ...r, energyWh: 0 }));
    expect(decide(house, evening, { ...london, recentConsumption: idle })).toMatchObject({
      kind: 'no-bid',
      code: 'no-baseline-consumption',
    });
  });
});

describe('household that never bids', () => {
  it('never bids, whatever the event', () => {
    for (const event of [evening, { ...evening, priceCapPerMWh: 1_000_000_000, requestedReductionWh: 1 }]) {
      expect(decide(never, event, london)).toEqual({
        kind: 'no-bid',
        eventId: 'ev-1',
        code: 'mode-never',
        reason: 'this household never bids (mode: never)',
        skippedLoads: [],
      });
    }
  });
});
