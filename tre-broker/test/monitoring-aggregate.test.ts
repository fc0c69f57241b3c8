/** The release arithmetic, without SQLite or MQTT: who contributes, the clamped total, Delta, noise. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { aggregate, contributions } from '../src/monitoring/aggregate.js';

const minutes = 30;

describe('contributions', () => {
  it('includes complete households, counts excluded and missing, clamps to the bound', () => {
    const members = [
      { meterId: 'a', boundWh: 1_000 },
      { meterId: 'b', boundWh: 1_000 },
      { meterId: 'c', boundWh: 4_000 },
      { meterId: 'd', boundWh: 500 },
      { meterId: 'e', boundWh: 500 },
    ];
    const reported = new Map([
      ['a', { wh: 400, coveredMinutes: 30, excluded: 0 }],
      ['b', { wh: 5_000, coveredMinutes: 30, excluded: 0 }], // clamped to 1,000
      ['c', { wh: 100, coveredMinutes: 15, excluded: 0 }], // half the interval: missing
      ['d', { wh: 0, coveredMinutes: 30, excluded: 1 }], // excluded
    ]);
    expect(contributions(members, reported, minutes)).toEqual({
      included: [
        { meterId: 'a', wh: 400 },
        { meterId: 'b', wh: 1_000 },
      ],
      excluded: 1,
      missing: 2,
      totalWh: 1_400,
      deltaWh: 4_000,
    });
  });

  it('Delta is at least 1 Wh and the counts always add up to the group (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            boundWh: fc.nat(10_000),
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
        (rows) => {
          const members = rows.map((r, i) => ({ meterId: `m${i}`, boundWh: r.boundWh }));
          const reported = new Map(
            rows.flatMap((r, i) => (r.reported ? [[`m${i}`, r.reported] as const] : [])),
          );
          const c = contributions(members, reported, minutes);
          expect(c.included.length + c.excluded + c.missing).toBe(members.length);
          expect(c.deltaWh).toBe(Math.max(1, ...rows.map((r) => r.boundWh)));
          expect(c.totalWh).toBeGreaterThanOrEqual(0);
          expect(c.totalWh).toBeLessThanOrEqual(rows.reduce((s, r) => s + r.boundWh, 0));
          expect(c.included.reduce((s, i) => s + i.wh, 0)).toBe(c.totalWh);
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
