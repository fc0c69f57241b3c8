/**
 * Per-household privacy budget, basic sequential composition: every release that uses a
 * household's reading charges its epsilon to that household, for the (UTC) day of the released
 * interval. Two limits hold at once: the daily budget, and a rolling budget over the last
 * `rollingDays` days (that day included), so the long-run loss is bounded too.
 *
 * A household that cannot afford a release leaves it: its reading is not used and nothing is
 * charged to it; the others are released and charged as usual. The DNO sees only the noised total,
 * so a household leaving moves it by at most the sensitivity the noise already hides; no count of
 * who left is released. Epsilon is kept in integer micro-units (1 = 1,000,000), so sums are exact.
 */
import type { Db, Store } from '../store/store.js';

export const MICRO = 1_000_000;
const DAY = 86_400_000;

export function toMicro(epsilon: number): number {
  const micro = Math.round(epsilon * MICRO);
  if (micro < 1) throw new RangeError(`epsilon ${epsilon} is too small (resolution 1e-6)`);
  return micro;
}

export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export interface BudgetLimits {
  /** Per household per UTC day, micro-epsilon. */
  dailyMicro: number;
  /** Per household over any `rollingDays` consecutive UTC days, micro-epsilon. */
  rollingMicro: number;
  rollingDays: number;
}

export class PrivacyBudget {
  readonly dailyMicro: number;
  readonly rollingMicro: number;
  readonly rollingDays: number;

  constructor(
    private readonly db: Db,
    limits: number | BudgetLimits,
  ) {
    const l =
      typeof limits === 'number' ? { dailyMicro: limits, rollingMicro: limits, rollingDays: 1 } : limits;
    this.dailyMicro = l.dailyMicro;
    this.rollingMicro = l.rollingMicro;
    this.rollingDays = l.rollingDays;
  }

  static schema = `CREATE TABLE IF NOT EXISTS privacy_budget (
      meter_id TEXT NOT NULL,
      day TEXT NOT NULL,
      spent_micro INTEGER NOT NULL,
      PRIMARY KEY (meter_id, day)
    ) WITHOUT ROWID;`;

  /** The budget kept in `store`, its table created on first use. */
  static open(store: Store, limits: BudgetLimits): PrivacyBudget {
    store.migrate('privacy-budget-1', PrivacyBudget.schema);
    return new PrivacyBudget(store.db, limits);
  }

  spent(meterId: string, day: string): number {
    const row = this.db
      .prepare('SELECT spent_micro FROM privacy_budget WHERE meter_id = ? AND day = ?')
      .get(meterId, day) as { spent_micro: number } | undefined;
    return row?.spent_micro ?? 0;
  }

  /** Spent over the `rollingDays` days ending with `day`. */
  spentRolling(meterId: string, day: string): number {
    const first = utcDay(Date.parse(day) - (this.rollingDays - 1) * DAY);
    const row = this.db
      .prepare(
        'SELECT coalesce(sum(spent_micro), 0) AS s FROM privacy_budget WHERE meter_id = ? AND day >= ? AND day <= ?',
      )
      .get(meterId, first, day) as { s: number };
    return row.s;
  }

  /**
   * Can this household afford `micro` more on `day` under both limits? Every rolling window that
   * contains `day` must stay within the rolling budget (releases can be charged out of day order,
   * e.g. after a restart), so the days up to `rollingDays - 1` either side are read, in one query.
   */
  affords(meterId: string, day: string, micro: number): boolean {
    const t = Date.parse(day);
    const n = this.rollingDays;
    const rows = this.db
      .prepare('SELECT day, spent_micro FROM privacy_budget WHERE meter_id = ? AND day >= ? AND day <= ?')
      .all(meterId, utcDay(t - (n - 1) * DAY), utcDay(t + (n - 1) * DAY)) as {
      day: string;
      spent_micro: number;
    }[];
    const spentOn = new Map(rows.map((r) => [r.day, r.spent_micro]));
    const at = (k: number) => spentOn.get(utcDay(t + k * DAY)) ?? 0;
    if (at(0) + micro > this.dailyMicro) return false;
    // The n windows ending at day 0 .. n-1, slid one day at a time.
    let window = micro;
    for (let k = -n + 1; k <= 0; k++) window += at(k);
    for (let end = 0; end < n; end++) {
      if (end > 0) window += at(end) - at(end - n);
      if (window > this.rollingMicro) return false;
    }
    return true;
  }

  /**
   * Charges `micro` to every household that can afford it and returns those (in order); the
   * others are left out of the release, uncharged. Call inside the release's transaction.
   */
  charge(meterIds: readonly string[], day: string, micro: number): string[] {
    const charged = meterIds.filter((m) => this.affords(m, day, micro));
    const stmt = this.db.prepare(
      `INSERT INTO privacy_budget (meter_id, day, spent_micro) VALUES (?, ?, ?)
       ON CONFLICT (meter_id, day) DO UPDATE SET spent_micro = spent_micro + excluded.spent_micro`,
    );
    for (const m of charged) stmt.run(m, day, micro);
    return charged;
  }

  /** Fraction of today's budget spent, per household (for the dashboard). */
  distribution(day: string, meterIds: string[]): number[] {
    return meterIds.map((m) => this.spent(m, day) / this.dailyMicro);
  }
}
