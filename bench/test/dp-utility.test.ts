import { describe, expect, it } from 'vitest';
import { DEFAULT_BOUND_WH, expectedAbsOffset, runDpUtility } from '../src/dp-utility.js';

const pct = (cell: string | number | undefined) => cell as number;
const COLUMN = { bound: 2, delta: 3, noise: 5, bias: 6, combined: 7, measured: 8 };

describe('dp-utility bench', () => {
  const r = runDpUtility({
    sizes: [10, 1_000],
    bounds: ['capacity', 2_000, DEFAULT_BOUND_WH],
    epsilons: [[1, 2]],
    trials: 40,
  });
  const row = (size: number, bound: number | string, epsilon = '1/1') =>
    r.rows.find((x) => x[0] === size && x[COLUMN.bound] === bound && x[1] === epsilon)!;

  it('prints a row per (size, bound) at epsilon 1 and per other epsilon at the default bound', () => {
    expect(r.rows).toHaveLength(2 * 4);
    expect(row(1_000, DEFAULT_BOUND_WH, '1/2')).toBeDefined();
    // The error falls with group size.
    expect(pct(row(1_000, DEFAULT_BOUND_WH)[COLUMN.combined])).toBeLessThan(
      pct(row(10, DEFAULT_BOUND_WH)[COLUMN.combined]) / 10,
    );
  });

  it('Delta is the bound (capacity caps it), capacity has no clamping bias, a low bound has much', () => {
    expect(row(1_000, 'capacity')[COLUMN.delta]).toBe(8_625);
    expect(row(1_000, DEFAULT_BOUND_WH)[COLUMN.delta]).toBe(DEFAULT_BOUND_WH);
    expect(pct(row(1_000, 'capacity')[COLUMN.bias])).toBe(0);
    expect(pct(row(1_000, 2_000)[COLUMN.bias])).toBeGreaterThan(
      pct(row(1_000, DEFAULT_BOUND_WH)[COLUMN.bias]),
    );
    for (const x of r.rows) {
      // Combined >= each part (E|N - d| >= d and >= E|N|), <= their sum.
      expect(pct(x[COLUMN.combined])).toBeGreaterThanOrEqual(pct(x[COLUMN.bias]));
      expect(pct(x[COLUMN.combined])).toBeGreaterThanOrEqual(pct(x[COLUMN.noise]) - 0.01);
      expect(pct(x[COLUMN.combined])).toBeLessThanOrEqual(pct(x[COLUMN.noise]) + pct(x[COLUMN.bias]) + 0.01);
    }
  });

  it('the default bound beats the capacity rule at 1,000 households, epsilon 1; the summary says so', () => {
    expect(pct(row(1_000, DEFAULT_BOUND_WH)[COLUMN.combined])).toBeLessThan(
      pct(row(1_000, 'capacity')[COLUMN.combined]),
    );
    expect(r.summary).toMatchObject({
      defaultBoundWh: 5_500,
      combinedPercentAt1000: row(1_000, DEFAULT_BOUND_WH)[COLUMN.combined],
      clampingBiasPercentAt1000: row(1_000, DEFAULT_BOUND_WH)[COLUMN.bias],
      noisePercentAt1000: row(1_000, DEFAULT_BOUND_WH)[COLUMN.noise],
      combinedPercentCapacityAt1000: row(1_000, 'capacity')[COLUMN.combined],
    });
  });

  it('E|N - d| of the discrete Laplace: E|N| at d = 0, d + (tail) beyond', () => {
    const a = Math.exp(-1 / 3);
    let direct = 0;
    let directAtFive = 0;
    for (let k = -400; k <= 400; k++) {
      const p = ((1 - a) / (1 + a)) * a ** Math.abs(k);
      direct += Math.abs(k) * p;
      directAtFive += Math.abs(k - 5) * p;
    }
    expect(expectedAbsOffset(a, 0)).toBeCloseTo(direct, 9);
    expect(expectedAbsOffset(a, 5)).toBeCloseTo(directAtFive, 9);
  });
});
