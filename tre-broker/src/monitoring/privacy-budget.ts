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

/** Days since 1970-01-01 of a `YYYY-MM-DD` day. */
const dayNumber = (day: string) => Math.floor(Date.parse(day) / DAY);

/**
 * Can a household that spent `spentOn(k)` on the day `k` days from the charged one afford `micro`
 * more on it under both limits? Every rolling window that contains the day must stay within the
 * rolling budget (releases can be charged out of day order, e.g. after a restart), so the days up
 * to `rollingDays - 1` either side count.
 */
export function affordable(spentOn: (k: number) => number, micro: number, limits: BudgetLimits): boolean {
  const n = limits.rollingDays;
  if (spentOn(0) + micro > limits.dailyMicro) return false;
  // The n windows ending at day 0 .. n-1, slid one day at a time.
  let window = micro;
  for (let k = -n + 1; k <= 0; k++) window += spentOn(k);
  for (let end = 0; end < n; end++) {
    if (end > 0) window += spentOn(end) - spentOn(end - n);
    if (window > limits.rollingMicro) return false;
  }
  return true;
}

export class PrivacyBudget implements BudgetLimits {
  readonly dailyMicro: number;
  readonly rollingMicro: number;
  readonly rollingDays: number;
  private readonly spentStmt;
  private readonly rollingStmt;
  private readonly windowStmt;
  private readonly chargeStmt;

  constructor(
    private readonly db: Db,
    limits: number | BudgetLimits,
  ) {
    const l =
      typeof limits === 'number' ? { dailyMicro: limits, rollingMicro: limits, rollingDays: 1 } : limits;
    this.dailyMicro = l.dailyMicro;
    this.rollingMicro = l.rollingMicro;
    this.rollingDays = l.rollingDays;
    this.spentStmt = db.prepare('SELECT spent_micro FROM privacy_budget WHERE meter_id = ? AND day = ?');
    this.rollingStmt = db.prepare(
      'SELECT coalesce(sum(spent_micro), 0) AS s FROM privacy_budget WHERE meter_id = ? AND day >= ? AND day <= ?',
    );
    // Every household of a release in one query (the primary key serves each one's day range).
    this.windowStmt = db.prepare(
      `SELECT meter_id, day, spent_micro FROM privacy_budget
       WHERE meter_id IN (SELECT value FROM json_each(?)) AND day >= ? AND day <= ?`,
    );
    this.chargeStmt = db.prepare(
      `INSERT INTO privacy_budget (meter_id, day, spent_micro) VALUES (?, ?, ?)
       ON CONFLICT (meter_id, day) DO UPDATE SET spent_micro = spent_micro + excluded.spent_micro`,
    );
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
    const row = this.spentStmt.get(meterId, day) as { spent_micro: number } | undefined;
    return row?.spent_micro ?? 0;
  }

  /** Spent over the `rollingDays` days ending with `day`. */
  spentRolling(meterId: string, day: string): number {
    const first = utcDay(Date.parse(day) - (this.rollingDays - 1) * DAY);
    return (this.rollingStmt.get(meterId, first, day) as { s: number }).s;
  }

  /**
   * Charges `micro` to every household that can afford it (`affordable`) and returns those (in
   * order); the others are left out of the release, uncharged. Call inside the release's transaction.
   */
  charge(meterIds: readonly string[], day: string, micro: number): string[] {
    const t = Date.parse(day);
    const reach = (this.rollingDays - 1) * DAY;
    const today = dayNumber(day);
    const spent = new Map<string, Map<number, number>>();
    const rows = this.windowStmt.all(JSON.stringify(meterIds), utcDay(t - reach), utcDay(t + reach)) as {
      meter_id: string;
      day: string;
      spent_micro: number;
    }[];
    for (const r of rows) {
      const days = spent.get(r.meter_id) ?? new Map<number, number>();
      spent.set(r.meter_id, days);
      days.set(dayNumber(r.day) - today, r.spent_micro);
    }
    const charged = meterIds.filter((m) => {
      const days = spent.get(m);
      return affordable(days ? (k) => days.get(k) ?? 0 : () => 0, micro, this);
    });
    for (const m of charged) this.chargeStmt.run(m, day, micro);
    return charged;
  }

  /** Fraction of today's budget spent, per household (for the dashboard). */
  distribution(day: string, meterIds: string[]): number[] {
    return meterIds.map((m) => this.spent(m, day) / this.dailyMicro);
  }
}
