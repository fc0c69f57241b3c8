/**
 * The demand-response baseline rule, shared by the TRE (which checks bids and delivery against it)
 * and the meter agent (whose policy must not bid more than the TRE will accept): "10-in-10", as in
 * the reference fact sheet. The baseline of a window is the mean energy in the same clock window
 * on the 10 most recent comparable days (weekdays for a weekday event, weekend days for a weekend
 * event) within 30 days that have readings covering the whole window. With none, it is the mean
 * energy per window length over the 7 days before the window.
 */
const DAY_MS = 86_400_000;
export const BASELINE_DAYS = 10;
export const BASELINE_LOOKBACK_DAYS = 30;
export const BASELINE_FALLBACK_DAYS = 7;

const isWeekend = (t: number) => [0, 6].includes(new Date(t).getUTCDay());

/** The same window on earlier comparable days, most recent first (up to the lookback). */
export function* comparableWindows(
  windowStart: number,
  windowEnd: number,
): Generator<{ from: number; to: number }> {
  for (let d = 1; d <= BASELINE_LOOKBACK_DAYS; d++) {
    const from = windowStart - d * DAY_MS;
    if (isWeekend(from) === isWeekend(windowStart)) yield { from, to: windowEnd - d * DAY_MS };
  }
}

export interface BaselineInterval {
  intervalStart: string;
  intervalMinutes: number;
  energyWh: number;
}

/**
 * The agent's side: of its own recent intervals, the ones the TRE's baseline for this window is
 * made of (whole comparable windows, up to 10 days; else the 7-day fallback). Their average power
 * over the window is the household's baseline, as the TRE computes it from the same readings.
 */
export function baselineIntervals<T extends BaselineInterval>(
  intervals: readonly T[],
  windowStart: number,
  windowEnd: number,
): T[] {
  const minutes = (windowEnd - windowStart) / 60_000;
  const starts = intervals.map((i) => Date.parse(i.intervalStart));
  const within = (from: number, to: number) =>
    intervals.filter((_, k) => starts[k]! >= from && starts[k]! < to);
  const chosen: T[] = [];
  let days = 0;
  for (const { from, to } of comparableWindows(windowStart, windowEnd)) {
    const day = within(from, to);
    if (day.reduce((sum, i) => sum + i.intervalMinutes, 0) < minutes) continue;
    chosen.push(...day);
    if (++days === BASELINE_DAYS) break;
  }
  return days > 0 ? chosen : within(windowStart - BASELINE_FALLBACK_DAYS * DAY_MS, windowStart);
}
