/**
 * A supplier's billing period calendar, as pure arithmetic. The calendar is a list of segments:
 * from its `from` on, periods of `length` follow one another (days, or calendar months in UTC); each
 * later segment starts at a boundary of the one before it. A supplier's change therefore never
 * moves a boundary that is already set: it becomes a new segment from a boundary after the period
 * open now (`changeCalendar`), so every statement spans whole periods of a length that was at least
 * the regulator's minimum, and statements tile time without overlap or gap.
 */
import type { PeriodLength } from '@tre/protocol';

export interface Segment {
  from: number;
  length: PeriodLength;
}
/** Sorted by `from`, never empty. */
export type Calendar = readonly Segment[];

export interface Period {
  start: number;
  end: number;
}

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

/** The period containing `t`; before the calendar's first boundary, its first period. */
export function periodAt(calendar: Calendar, t: number): Period {
  let i = 0;
  while (i + 1 < calendar.length && calendar[i + 1]!.from <= t) i++;
  const seg = calendar[i]!;
  let start = seg.from;
  let end = addPeriods(start, seg.length, 1);
  while (end <= t) {
    start = end;
    end = addPeriods(start, seg.length, 1);
  }
  return { start, end };
}

/** The period open at `now`: a period stays open until `grace` after its end (its last readings). */
export function openPeriod(calendar: Calendar, grace: number, now: number): Period {
  return periodAt(calendar, now - grace);
}

/** The periods after the one starting at `lastStated` that ended by `openStart` (missed while down). */
export function periodsBetween(calendar: Calendar, lastStated: number, openStart: number): Period[] {
  const out: Period[] = [];
  let p = periodAt(calendar, periodAt(calendar, lastStated).end);
  while (p.end <= openStart) {
    out.push(p);
    p = periodAt(calendar, p.end);
  }
  return out;
}

export type CalendarChange =
  | { ok: true; calendar: Calendar; effectiveFrom: number }
  | { ok: false; reason: 'PERIOD_TOO_SHORT'; message: string };

/**
 * A supplier's request for periods of `length` from `startsAt`. Without a calendar it starts one at
 * `startsAt`. With one, the change takes effect at the first boundary that is after the period
 * containing `now` ends and not before `startsAt`; segments after that boundary (a pending change)
 * are replaced. Boundaries already set never move, so the open period keeps its span.
 */
export function changeCalendar(
  calendar: Calendar | undefined,
  request: { startsAt: number; length: PeriodLength },
  min: PeriodLength,
  now: number,
): CalendarChange {
  if (!atLeast(request.length, min))
    return {
      ok: false,
      reason: 'PERIOD_TOO_SHORT',
      message: `the regulator's minimum billing period is ${min.count} ${min.unit}(s); ask for at least that`,
    };
  if (!calendar || calendar.length === 0)
    return {
      ok: true,
      calendar: [{ from: request.startsAt, length: request.length }],
      effectiveFrom: request.startsAt,
    };
  let boundary = periodAt(calendar, now).end;
  while (boundary < request.startsAt) boundary = periodAt(calendar, boundary).end;
  const kept = calendar.filter((s) => s.from < boundary);
  const last = kept[kept.length - 1]!.length;
  const same = last.unit === request.length.unit && last.count === request.length.count;
  return {
    ok: true,
    calendar: same ? kept : [...kept, { from: boundary, length: request.length }],
    effectiveFrom: boundary,
  };
}

/** Minutes of [start, end). */
export function minutesOf(period: Period): number {
  return Math.round((period.end - period.start) / 60_000);
}
