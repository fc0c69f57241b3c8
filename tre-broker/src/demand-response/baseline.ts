/**
 * A household's baseline for a DR window: what it would have used without the event.
 * Rule ("10-in-10", as in the reference fact sheet): the mean energy in the same clock window on
 * the 10 most recent comparable days before the event (weekdays for a weekday event, weekend days
 * for a weekend event) that have readings covering the whole window (as many as exist, up to 10).
 * With none, the fallback is the household's mean energy per window length over the 7 days before.
 * With no readings at all there is no baseline (and delivery cannot be shown).
 */
import type { Db } from '../store/store.js';

const DAY = 86_400_000;
const isWeekend = (t: number) => [0, 6].includes(new Date(t).getUTCDay());

function energyIn(db: Db, meterId: string, from: number, to: number): { wh: number; minutes: number } {
  const r = db
    .prepare(
      `SELECT coalesce(sum(effective_wh), 0) AS wh, coalesce(sum(interval_minutes), 0) AS minutes FROM readings
       WHERE meter_id = ? AND status = 'ok' AND interval_start >= ? AND interval_start < ?`,
    )
    .get(meterId, from, to) as { wh: number; minutes: number };
  return r;
}

export function baselineWh(
  db: Db,
  meterId: string,
  windowStart: number,
  windowEnd: number,
): number | undefined {
  const minutes = (windowEnd - windowStart) / 60_000;
  const days: number[] = [];
  for (let d = 1; d <= 30 && days.length < 10; d++) {
    const from = windowStart - d * DAY;
    if (isWeekend(from) !== isWeekend(windowStart)) continue;
    const e = energyIn(db, meterId, from, from + (windowEnd - windowStart));
    if (e.minutes >= minutes) days.push(e.wh);
  }
  if (days.length > 0) return Math.round(days.reduce((a, b) => a + b, 0) / days.length);
  const week = energyIn(db, meterId, windowStart - 7 * DAY, windowStart);
  if (week.minutes === 0) return undefined;
  return Math.round((week.wh * minutes) / week.minutes);
}

/** Energy the household actually used in the window (in-bounds readings only). */
export function measuredWh(
  db: Db,
  meterId: string,
  windowStart: number,
  windowEnd: number,
): { wh: number; complete: boolean } {
  const e = energyIn(db, meterId, windowStart, windowEnd);
  return { wh: e.wh, complete: e.minutes >= (windowEnd - windowStart) / 60_000 };
}
