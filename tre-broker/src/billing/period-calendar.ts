/**
 * The billing period calendar, pure: a supplier's period is anchored at a start and repeats by a
 * length (days, or calendar months in UTC); it is never shorter than the regulator's minimum.
 */
import type { PeriodLength } from '@tre/protocol';

/** Adds `n` periods of `length` to `t` (calendar months in UTC). */
export function addPeriods(t: number, length: PeriodLength, n: number): number {
  if (length.unit === 'day') return t + n * length.count * 86_400_000;
  const d = new Date(t);
  return Date.UTC(
    d.getUTCFullYear(),
    d.getUTCMonth() + n * length.count,
    d.getUTCDate(),
    d.getUTCHours(),
    d.getUTCMinutes(),
  );
}

/**
 * Is `period` at least `min`? Same unit: compare counts. Across units, a month counts as 28 days
 * for the supplier's period and 31 days for the regulator's minimum (never shorter than allowed).
 */
export function atLeast(period: PeriodLength, min: PeriodLength): boolean {
  if (period.unit === min.unit) return period.count >= min.count;
  const days = (p: PeriodLength, monthDays: number) => (p.unit === 'day' ? p.count : p.count * monthDays);
  return days(period, 28) >= days(min, 31);
}

/** The period open at `now`: a period stays open until `grace` after its end (its last readings). */
export function currentPeriod(
  anchor: number,
  length: PeriodLength,
  grace: number,
  now: number,
): { start: number; end: number } {
  let start = anchor;
  let end = addPeriods(start, length, 1);
  while (end + grace <= now) {
    start = end;
    end = addPeriods(start, length, 1);
  }
  return { start, end };
}

/** The periods after the one starting at `lastStated` that ended by `openStart` (missed while down). */
export function periodsBetween(
  lastStated: number,
  length: PeriodLength,
  openStart: number,
): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  for (
    let s = addPeriods(lastStated, length, 1);
    addPeriods(s, length, 1) <= openStart;
    s = addPeriods(s, length, 1)
  )
    out.push({ start: s, end: addPeriods(s, length, 1) });
  return out;
}

/** Interval readings a period should have (15-minute intervals). */
export function expectedIntervals(start: number, end: number): number {
  return Math.round((end - start) / (15 * 60_000));
}
