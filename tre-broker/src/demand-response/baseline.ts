/**
 * A household's baseline for a DR window: what it would have used without the event, by the rule
 * in `@tre/protocol`'s dr-baseline (10-in-10 on comparable days, else the 7-day mean), from the
 * readings the TRE stored. With no readings at all there is no baseline (and delivery cannot be
 * shown).
 */
import { BASELINE_DAYS, BASELINE_FALLBACK_DAYS, comparableWindows } from '@tre/protocol';

const DAY = 86_400_000;

/** A household's in-bounds energy in [from, to) and the minutes its readings cover (the reading store's `energyIn`). */
export type EnergyIn = (meterId: string, from: number, to: number) => { wh: number; minutes: number };

export function baselineWh(
  energyIn: EnergyIn,
  meterId: string,
  windowStart: number,
  windowEnd: number,
): number | undefined {
  const minutes = (windowEnd - windowStart) / 60_000;
  const days: number[] = [];
  for (const { from, to } of comparableWindows(windowStart, windowEnd)) {
    const e = energyIn(meterId, from, to);
    if (e.minutes < minutes) continue;
    days.push(e.wh);
    if (days.length === BASELINE_DAYS) break;
  }
  if (days.length > 0) return Math.round(days.reduce((a, b) => a + b, 0) / days.length);
  const week = energyIn(meterId, windowStart - BASELINE_FALLBACK_DAYS * DAY, windowStart);
  if (week.minutes === 0) return undefined;
  return Math.round((week.wh * minutes) / week.minutes);
}

/** Energy the household actually used in the window (in-bounds readings only). */
export function measuredWh(
  energyIn: EnergyIn,
  meterId: string,
  windowStart: number,
  windowEnd: number,
): { wh: number; complete: boolean } {
  const e = energyIn(meterId, windowStart, windowEnd);
  return { wh: e.wh, complete: e.minutes >= (windowEnd - windowStart) / 60_000 };
}
