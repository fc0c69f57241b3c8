/**
 * The release arithmetic, without SQLite or MQTT: who contributes, the total clamped to the
 * contribution bound, Delta (one per release), noise.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  aggregate,
  contributions,
  DEFAULT_CONTRIBUTION_BOUND_WH,
  intervalBoundWh,
} from '../src/monitoring/aggregate.js';

const minutes = 30;

describe('contributions', () => {
  it('includes complete households, counts excluded and missing, clamps to the capacity', () => {
    const members = [
      { meterId: 'a', capacityWh: 1_000 },
      { meterId: 'b', capacityWh: 1_000 },
      { meterId: 'c', capacityWh: 4_000 },
      { meterId: 'd', capacityWh: 500 },
      { meterId: 'e', capacityWh: 500 },
    ];
    const reported = new Map([
      ['a', { wh: 400, coveredMinutes: 30, excluded: 0 }],
      ['b', { wh: 5_000, coveredMinutes: 30, excluded: 0 }], // clamped to 1,000
      ['c', { wh: 100, coveredMinutes: 15, excluded: 0 }], // half the interval: missing
      ['d', { wh: 0, coveredMinutes: 30, excluded: 1 }], // excluded
    ]);
    expect(contributions(members, reported, minutes, DEFAULT_CONTRIBUTION_BOUND_WH)).toEqual({
      included: [
        { meterId: 'a', wh: 400, clippedWh: 0 },
        { meterId: 'b', wh: 1_000, clippedWh: 4_000 },
      ],
      excluded: 1,
      missing: 2,
      totalWh: 1_400,
      deltaWh: 4_000, // the largest capacity, below the bound
    });
  });

  it('clamps every contribution to the bound, and Delta is the bound when a capacity is above it', () => {
    const members = [
      { meterId: 'ev', capacityWh: 8_625 }, // 17.25 kW x 30 min
      { meterId: 'flat', capacityWh: 2_875 },
      { meterId: 'house', capacityWh: 4_025 },
    ];
    const reported = new Map([
      ['ev', { wh: 5_900, coveredMinutes: 30, excluded: 0 }], // an 11 kW charger and the house
      ['flat', { wh: 300, coveredMinutes: 30, excluded: 0 }],
      ['house', { wh: 2_400, coveredMinutes: 30, excluded: 0 }],
    ]);
    const c = contributions(members, reported, minutes, 2_000);
    expect(c.included).toEqual([
      { meterId: 'ev', wh: 2_000, clippedWh: 3_900 },
      { meterId: 'flat', wh: 300, clippedWh: 0 },
      { meterId: 'house', wh: 2_000, clippedWh: 400 },
    ]);
    expect(c.totalWh).toBe(4_300);
    expect(c.deltaWh).toBe(2_000); // one bound per release, not per household
    // The bias the DNO does not see: true total minus clamped total.
    expect(5_900 + 300 + 2_400 - c.totalWh).toBe(c.included.reduce((s, i) => s + i.clippedWh, 0));
    expect(contributions(members, reported, minutes, DEFAULT_CONTRIBUTION_BOUND_WH).deltaWh).toBe(5_500);
  });

  it('the default bound is 11 kW x 30 min, and 15-minute releases use half of the 30-minute bound', () => {
    expect(DEFAULT_CONTRIBUTION_BOUND_WH).toBe(11_000 / 2);
    expect(intervalBoundWh(5_500, 30)).toBe(5_500);
    expect(intervalBoundWh(5_500, 15)).toBe(2_750);
    expect(intervalBoundWh(2_001, 15)).toBe(1_000); // whole Wh, rounded down
    expect(intervalBoundWh(1, 15)).toBe(1); // never 0
  });

  it('Delta is at least 1 Wh, at most the bound, and the counts always add up to the group (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12_000 }),
        fc.array(
          fc.record({
            capacityWh: fc.nat(10_000),
            reported: fc.option(
              fc.record({
                wh: fc.integer({ min: -100, max: 20_000 }),
                coveredMinutes: fc.constantFrom(0, 15, 30),
                excluded: fc.nat(2),
              }),
            ),
          }),
          { maxLength: 40 },
        ),
        (boundWh, rows) => {
          const members = rows.map((r, i) => ({ meterId: `m${i}`, capacityWh: r.capacityWh }));
          const reported = new Map(
            rows.flatMap((r, i) => (r.reported ? [[`m${i}`, r.reported] as const] : [])),
          );
          const c = contributions(members, reported, minutes, boundWh);
          expect(c.included.length + c.excluded + c.missing).toBe(members.length);
          expect(c.deltaWh).toBe(
            Math.max(1, Math.min(boundWh, Math.max(0, ...rows.map((r) => r.capacityWh)))),
          );
          expect(c.totalWh).toBeGreaterThanOrEqual(0);
          for (const i of c.included) {
            expect(i.wh).toBeLessThanOrEqual(c.deltaWh);
            expect(i.wh).toBeLessThanOrEqual(boundWh);
            expect(i.clippedWh).toBeGreaterThanOrEqual(0);
          }
          expect(c.included.reduce((s, i) => s + i.wh, 0)).toBe(c.totalWh);
        },
      ),
    );
  });

  it('one household changed in any way moves the clamped total by at most Delta (property)', () => {
    const report = fc.option(
      fc.record({
        wh: fc.integer({ min: -100, max: 20_000 }),
        coveredMinutes: fc.constantFrom(15, 30),
        excluded: fc.nat(1),
      }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12_000 }),
        fc.array(fc.record({ capacityWh: fc.nat(10_000), reported: report }), {
          minLength: 1,
          maxLength: 20,
        }),
        report,
        (boundWh, rows, changed) => {
          const members = rows.map((r, i) => ({ meterId: `m${i}`, capacityWh: r.capacityWh }));
          const map = (rs: typeof rows) =>
            new Map(rs.flatMap((r, i) => (r.reported ? [[`m${i}`, r.reported] as const] : [])));
          const a = contributions(members, map(rows), minutes, boundWh);
          const b = contributions(
            members,
            map([{ ...rows[0]!, reported: changed }, ...rows.slice(1)]),
            minutes,
            boundWh,
          );
          expect(b.deltaWh).toBe(a.deltaWh); // the sensitivity does not depend on the readings
          expect(Math.abs(a.totalWh - b.totalWh)).toBeLessThanOrEqual(a.deltaWh);
        },
      ),
    );
  });
});

describe('aggregate', () => {
  it('adds integer discrete Laplace noise of scale Delta x q / p', () => {
    const noised = aggregate(12_345, 4_000, [1, 2]);
    expect(noised.noiseScaleWh).toBe(8_000);
    expect(Number.isInteger(noised.noisyTotalWh)).toBe(true);
    expect(noised.bound95Wh).toBeGreaterThan(0);
  });

  it('the noise is centred on the exact total and within the stated 95 % bound about 95 % of the time', () => {
    const n = 2_000;
    let outside = 0;
    let sum = 0;
    let bound = 0;
    for (let i = 0; i < n; i++) {
      const r = aggregate(10_000, 100, [1, 1]);
      bound = r.bound95Wh;
      sum += r.noisyTotalWh - 10_000;
      if (Math.abs(r.noisyTotalWh - 10_000) > r.bound95Wh) outside++;
    }
    expect(Math.abs(sum / n)).toBeLessThan(15); // sd of the mean ~ 100 x sqrt(2) / sqrt(2000) ~ 3.2
    expect(outside).toBeLessThan(n * 0.05 + 4 * Math.sqrt(n * 0.05 * 0.95));
    expect(bound).toBeGreaterThan(250); // ln(20) x 100 ~ 300
  });
});
