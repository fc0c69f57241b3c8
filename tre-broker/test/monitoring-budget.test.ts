import Database from 'better-sqlite3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PrivacyBudget, toMicro } from '../src/monitoring/privacy-budget.js';

function budget(daily: number) {
  const db = new Database(':memory:');
  db.exec(PrivacyBudget.schema);
  return new PrivacyBudget(db, toMicro(daily));
}

describe('privacy budget', () => {
  it('is all-or-nothing and counts, not names, the households that block a release', () => {
    const b = budget(1.5);
    expect(b.charge(['a', 'b'], '2026-01-01', toMicro(1))).toEqual({ charged: true });
    expect(b.charge(['a', 'c'], '2026-01-01', toMicro(1))).toEqual({ charged: false, blocked: 1 });
    expect(b.spent('c', '2026-01-01')).toBe(0); // nothing charged when withheld
    expect(b.charge(['c'], '2026-01-01', toMicro(1))).toEqual({ charged: true });
    expect(b.charge(['a'], '2026-01-02', toMicro(1))).toEqual({ charged: true }); // a new day
  });

  it('never lets any household exceed its daily budget (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            households: fc.subarray(['a', 'b', 'c', 'd', 'e'], { minLength: 1 }),
            day: fc.constantFrom('d1', 'd2'),
            eps: fc.integer({ min: 1, max: 900_000 }),
          }),
          { maxLength: 60 },
        ),
        fc.integer({ min: 1, max: 3_000_000 }),
        (releases, dailyMicro) => {
          const db = new Database(':memory:');
          db.exec(PrivacyBudget.schema);
          const b = new PrivacyBudget(db, dailyMicro);
          for (const r of releases) b.charge(r.households, r.day, r.eps);
          for (const h of ['a', 'b', 'c', 'd', 'e'])
            for (const d of ['d1', 'd2']) expect(b.spent(h, d)).toBeLessThanOrEqual(dailyMicro);
        },
      ),
      { numRuns: 300 },
    );
  });
});
