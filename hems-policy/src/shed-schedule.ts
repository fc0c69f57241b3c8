/**
 * When one load may be off during an event: the minutes its policy allows (allowed windows, minus
 * blocked hours), cut into periods no longer than its maximum off time, separated by at least its
 * minimum on-time (at least one minute), none starting before it may first be shed.
 */
import type { LocalMinute } from './local-time.js';
import {
  type BlockedHoursRule,
  type ComfortRule,
  type Load,
  minuteOfDay,
  type TimeWindow,
} from './policy-schema.js';

/** A shed period in minutes relative to the start of the event's effective window: [start, end). */
export interface MinuteSpan {
  start: number;
  end: number;
}

function covers(window: TimeWindow | BlockedHoursRule, at: LocalMinute): boolean {
  return (
    (window.days === undefined || window.days.includes(at.weekday)) &&
    minuteOfDay(window.from) <= at.minuteOfDay &&
    at.minuteOfDay < minuteOfDay(window.to)
  );
}

/** Whether a comfort rule names this load (a rule without `loads` covers every load). */
export function ruleApplies(rule: ComfortRule, load: Load): boolean {
  return rule.loads === undefined || rule.loads.includes(load.name);
}

/** For each local minute, whether the policy lets this load be off then. */
export function allowedMinutes(
  load: Load,
  comfort: readonly ComfortRule[],
  minutes: readonly LocalMinute[],
): boolean[] {
  const blocked = comfort.filter(
    (r): r is BlockedHoursRule => r.rule === 'blocked-hours' && ruleApplies(r, load),
  );
  return minutes.map(
    (at) => load.allowedWindows.some((w) => covers(w, at)) && !blocked.some((rule) => covers(rule, at)),
  );
}

/**
 * Greedy schedule from the earliest allowed minute: each period runs while allowed and at most
 * `maxOffMinutes`; the next starts no sooner than `minOnTimeMinutes` after the previous ended.
 */
export function shedSpans(allowed: readonly boolean[], firstMinute: number, load: Load): MinuteSpan[] {
  const spans: MinuteSpan[] = [];
  let t = Math.max(0, firstMinute);
  while (t < allowed.length) {
    if (!allowed[t]) {
      t++;
      continue;
    }
    let end = t;
    while (end < allowed.length && allowed[end] && end - t < load.maxOffMinutes) end++;
    spans.push({ start: t, end });
    // Back on before the next period, at least for its minimum on-time (and at least a minute).
    t = end + Math.max(load.minOnTimeMinutes, 1);
  }
  return spans;
}

/** Energy in whole Wh that shedding `powerW` for `minutes` saves, rounded down. */
export function shedEnergyWh(powerW: number, minutes: number): number {
  return Math.floor((powerW * minutes) / 60);
}

/** Fewest whole minutes of shedding `powerW` that save at least `wh`. */
export function minutesFor(powerW: number, wh: number): number {
  return Math.ceil((wh * 60) / powerW);
}
