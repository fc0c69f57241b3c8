/** The bidder gives the household policy exactly the intervals the TRE's baseline uses. */
import { decide, examplePolicy } from '@tre/hems-policy';
import { baselineIntervals, ManualClock } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { Bidder } from '../src/bidder.js';

const QUARTER = 15 * 60_000;
const event = {
  v: 1 as const,
  dsmId: 'dsm-1',
  eventId: 'evening',
  windowStart: '2026-01-14T18:00:00.000Z',
  windowEnd: '2026-01-14T19:00:00.000Z',
  bidDeadline: '2026-01-14T17:00:00.000Z',
  acceptBy: '2026-01-14T17:30:00.000Z',
  requestedReductionWh: 5_000,
  priceCapPerMWh: 400_000,
};
const clock = new ManualClock(Date.parse('2026-01-14T14:00:00.000Z'));
const policy = examplePolicy('flat-ev');

/** Three weeks of quarter hours up to `now`, 4 kW in the evenings and 500 W otherwise. */
function intervals() {
  const list = [];
  for (let t = clock.now() - 21 * 86_400_000; t < clock.now(); t += QUARTER) {
    const evening = new Date(t).getUTCHours() >= 17;
    const importWh = evening ? 1_000 : 125;
    list.push({
      intervalStart: new Date(t).toISOString(),
      intervalMinutes: 15 as const,
      importWh,
      exportWh: 0,
      importRegisterWh: 0,
      exportRegisterWh: 0,
    });
  }
  return list;
}

describe('Bidder', () => {
  it('decides with the recorded intervals the baseline of the window is made of', () => {
    const bidder = new Bidder({ policy, timeZone: 'UTC', clock });
    const recorded = intervals();
    for (const i of recorded) bidder.record(i);
    const expected = decide(policy, event, {
      timeZone: 'UTC',
      now: new Date(clock.now()).toISOString(),
      recentConsumption: baselineIntervals(
        recorded.map((i) => ({
          intervalStart: i.intervalStart,
          intervalMinutes: i.intervalMinutes,
          energyWh: i.importWh,
        })),
        Date.parse(event.windowStart),
        Date.parse(event.windowEnd),
      ),
    });
    expect(expected.kind).toBe('bid');
    expect(bidder.propose(event)).toEqual(expected.kind === 'bid' ? { bid: expected.bid } : {});
  });

  it('never bids a load this box cannot switch, and never without a policy', () => {
    const unavailable = new Bidder({
      policy,
      timeZone: 'UTC',
      clock,
      loads: { 'ev-charger': { state: 'unavailable' } },
    });
    for (const i of intervals()) unavailable.record(i);
    expect(unavailable.propose(event)).toHaveProperty('reason');
    expect(new Bidder({ policy: undefined, timeZone: 'UTC', clock }).propose(event)).toEqual({
      reason: 'no policy configured',
    });
  });
});
