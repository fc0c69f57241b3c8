import Database from 'better-sqlite3-multiple-ciphers';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PrivacyBudget, toMicro } from '../src/monitoring/privacy-budget.js';

function budget(daily: number) {
  const db = new Database(':memory:');
  db.exec(PrivacyBudget.schema);
  return new PrivacyBudget(db, toMicro(daily));
}

describe('privacy budget', () => {
  it('charges those who can afford a release; a household without budget leaves it, uncharged', () => {
    const b = budget(1.5);
    expect(b.charge(['a', 'b'], '2026-01-01', toMicro(1))).toEqual(['a', 'b']);
    expect(b.charge(['a', 'c'], '2026-01-01', toMicro(1))).toEqual(['c']); // a leaves; c is still released
    expect(b.spent('a', '2026-01-01')).toBe(toMicro(1)); // nothing charged to who left
    expect(b.charge(['a'], '2026-01-02', toMicro(1))).toEqual(['a']); // a new day
  });

  it('the rolling budget bounds the loss over consecutive days', () => {
    const db = new Database(':memory:');
    db.exec(PrivacyBudget.schema);
    const b = new PrivacyBudget(db, { dailyMicro: toMicro(2), rollingMicro: toMicro(5), rollingDays: 3 });
    const days = ['2026-01-01', '2026-01-02', '2026-01-03', '2026-01-04'];
    expect(b.charge(['a'], days[0]!, toMicro(2))).toEqual(['a']);
    expect(b.charge(['a'], days[1]!, toMicro(2))).toEqual(['a']);
    expect(b.charge(['a'], days[2]!, toMicro(2))).toEqual([]); // 6 > 5 over three days
    expect(b.charge(['a'], days[2]!, toMicro(1))).toEqual(['a']);
    expect(b.spentRolling('a', days[3]!)).toBe(toMicro(3)); // day 1 has left the window
    expect(b.charge(['a'], days[3]!, toMicro(2))).toEqual(['a']);
  });

  it('never lets any household exceed its daily or rolling budget (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            households: fc.subarray(['a', 'b', 'c', 'd', 'e'], { minLength: 1 }),
            day: fc.constantFrom('2026-01-01', '2026-01-02', '2026-01-03'),
            eps: fc.integer({ min: 1, max: 900_000 }),
          }),
          { maxLength: 60 },
        ),
        fc.integer({ min: 1, max: 3_000_000 }),
        fc.integer({ min: 1, max: 5_000_000 }),
        (releases, dailyMicro, rollingMicro) => {
          const db = new Database(':memory:');
          db.exec(PrivacyBudget.schema);
          const b = new PrivacyBudget(db, { dailyMicro, rollingMicro, rollingDays: 2 });
          for (const r of releases) {
            const charged = b.charge(r.households, r.day, r.eps);
            expect(charged.every((h) => r.households.includes(h))).toBe(true);
          }
          for (const h of ['a', 'b', 'c', 'd', 'e'])
            for (const d of ['2026-01-01', '2026-01-02', '2026-01-03']) {
              expect(b.spent(h, d)).toBeLessThanOrEqual(dailyMicro);
              expect(b.spentRolling(h, d)).toBeLessThanOrEqual(rollingMicro);
            }
        },
      ),
      { numRuns: 300 },
    );
  });
});
