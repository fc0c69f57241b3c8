import { describe, expect, it } from 'vitest';
import { runDpUtility } from '../src/dp-utility.js';

describe('dp-utility bench', () => {
  it('prints a row per (size, epsilon) and the error falls with group size', () => {
    const r = runDpUtility({ sizes: [10, 1_000], epsilons: [[1, 1]], trials: 40 });
    expect(r.rows).toHaveLength(2);
    const median = (row: (string | number)[]) => Number.parseFloat(String(row[4]));
    expect(median(r.rows[1]!)).toBeLessThan(median(r.rows[0]!) / 10);
  });
});
