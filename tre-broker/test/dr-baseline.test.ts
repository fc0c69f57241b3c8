/**
 * The DR baseline as the TRE computes it from stored readings and as the meter agent's policy sees
 * it from its own intervals (`baselineIntervals`): the same days, the same mean. If they differed,
 * an honest household's bids would be refused as above what it can shed.
 */

import { type BaselineInterval, baselineIntervals } from '@tre/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { baselineWh } from '../src/demand-response/baseline.js';
import { ReadingStore } from '../src/ingest/reading-store.js';
import { Store } from '../src/store/store.js';

const DAY = 86_400_000;
const STEP = 15 * 60_000;
const T0 = Date.UTC(2026, 0, 5); // a Monday

describe('DR baseline: TRE and agent agree', () => {
  it('for random histories with gaps, weekday and weekend windows', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 13 }), // window day offset (covers weekdays and weekends)
        fc.integer({ min: 0, max: 88 }), // window start, in quarter hours
        fc.integer({ min: 1, max: 8 }), // window length, in quarter hours
        fc.array(fc.tuple(fc.integer({ min: 1, max: 35 }), fc.integer({ min: 0, max: 95 }), fc.nat(3000)), {
          maxLength: 600,
        }),
        fc.integer({ min: 0, max: 35 }), // days before the window with no readings at all
        (dayOffset, startQ, lengthQ, samples, emptyDays) => {
          const windowStart = T0 + 40 * DAY + dayOffset * DAY + startQ * STEP;
          const windowEnd = windowStart + lengthQ * STEP;
          const dayStart = windowStart - (windowStart % DAY);
          const intervals = new Map<number, number>();
          // Dense history (every interval) except the most recent `emptyDays` days, plus random holes.
          for (let t = dayStart - 36 * DAY; t < dayStart - emptyDays * DAY; t += STEP) intervals.set(t, 100);
          for (const [daysBack, q, wh] of samples) {
            const t = dayStart - daysBack * DAY + q * STEP;
            if (wh % 5 === 0) intervals.delete(t);
            else intervals.set(t, wh);
          }
          const store = new Store(':memory:');
          const readings = ReadingStore.open(store);
          const own: BaselineInterval[] = [];
          for (const [t, wh] of [...intervals].sort((a, b) => a[0] - b[0])) {
            readings.insert({
              meterId: 'm',
              intervalStart: t,
              intervalMinutes: 15,
              energyWh: wh,
              registerWh: 0,
              exportWh: null,
              exportRegisterWh: null,
              gap: false,
              effectiveWh: wh,
              status: 'ok',
              contentHash: '',
              receivedAt: 0,
            });
            own.push({ intervalStart: new Date(t).toISOString(), intervalMinutes: 15, energyWh: wh });
          }
          const tre = baselineWh(
            (m, from, to) => readings.energyIn(m, from, to),
            'm',
            windowStart,
            windowEnd,
          );
          store.close();
          const chosen = baselineIntervals(own, windowStart, windowEnd);
          const minutes = chosen.reduce((s, i) => s + i.intervalMinutes, 0);
          const agent =
            minutes === 0
              ? undefined
              : Math.round((chosen.reduce((s, i) => s + i.energyWh, 0) * lengthQ * 15) / minutes);
          expect(agent).toBe(tre);
        },
      ),
      { numRuns: 200 },
    );
  });
});
