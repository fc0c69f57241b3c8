/**
 * Per-household daily privacy budget, basic sequential composition: every release that includes a
 * household charges its epsilon to that household's budget for the (UTC) day of the released
 * interval; a release that would take any included household over the budget is withheld as a
 * whole (all-or-nothing), and the DNO learns only how many households blocked it, never which.
 * Epsilon is kept in integer micro-units (1 = 1,000,000), so sums are exact.
 */
import type { Db, Store } from '../store/store.js';

export const MICRO = 1_000_000;

export function toMicro(epsilon: number): number {
  const micro = Math.round(epsilon * MICRO);
  if (micro < 1) throw new RangeError(`epsilon ${epsilon} is too small (resolution 1e-6)`);
  return micro;
}

export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export class PrivacyBudget {
  constructor(
    private readonly db: Db,
    readonly dailyMicro: number,
  ) {}

  static schema = `CREATE TABLE IF NOT EXISTS privacy_budget (
      meter_id TEXT NOT NULL,
      day TEXT NOT NULL,
      spent_micro INTEGER NOT NULL,
      PRIMARY KEY (meter_id, day)
    ) WITHOUT ROWID;`;

  /** The budget kept in `store`, its table created on first use. */
  static open(store: Store, dailyMicro: number): PrivacyBudget {
    store.migrate('privacy-budget-1', PrivacyBudget.schema);
    return new PrivacyBudget(store.db, dailyMicro);
  }

  spent(meterId: string, day: string): number {
    const row = this.db
      .prepare('SELECT spent_micro FROM privacy_budget WHERE meter_id = ? AND day = ?')
      .get(meterId, day) as { spent_micro: number } | undefined;
    return row?.spent_micro ?? 0;
  }

  /** How many of these households cannot afford `micro` more on `day`. */
  blocked(meterIds: string[], day: string, micro: number): number {
    return meterIds.filter((m) => this.spent(m, day) + micro > this.dailyMicro).length;
  }

  /** Charges all households, or none if any would exceed (call inside a transaction). */
  charge(
    meterIds: string[],
    day: string,
    micro: number,
  ): { charged: true } | { charged: false; blocked: number } {
    const blocked = this.blocked(meterIds, day, micro);
    if (blocked > 0) return { charged: false, blocked };
    const stmt = this.db.prepare(
      `INSERT INTO privacy_budget (meter_id, day, spent_micro) VALUES (?, ?, ?)
       ON CONFLICT (meter_id, day) DO UPDATE SET spent_micro = spent_micro + excluded.spent_micro`,
    );
    for (const m of meterIds) stmt.run(m, day, micro);
    return { charged: true };
  }

  /** Fraction of today's budget spent, per household (for the dashboard). */
  distribution(day: string, meterIds: string[]): number[] {
    return meterIds.map((m) => this.spent(m, day) / this.dailyMicro);
  }
}
