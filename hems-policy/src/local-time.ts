/**
 * Local wall-clock time of UTC instants in an IANA time zone, from `Intl` (no extra dependencies).
 * Weekdays are the policy's names (mon ... sun).
 */
import type { Weekday } from './policy-schema.js';

export const MINUTE_MS = 60_000;
const BLOCK_MS = 15 * MINUTE_MS;

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      weekday: 'short',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** A local wall-clock minute: weekday, minute since local midnight and the local date. */
export interface LocalMinute {
  weekday: Weekday;
  minuteOfDay: number;
  /** Local calendar date, YYYY-MM-DD. */
  date: string;
}

/** The local wall-clock minute of the UTC instant `ms` in `timeZone` (seconds are dropped). */
export function localMinute(ms: number, timeZone: string): LocalMinute {
  const parts: Record<string, string> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(ms))) parts[p.type] = p.value;
  const weekday = parts.weekday!.toLowerCase().slice(0, 3) as Weekday;
  return {
    weekday,
    minuteOfDay: Number(parts.hour) * 60 + Number(parts.minute),
    date: `${parts.year}-${parts.month}-${parts.day}`,
  };
}

/**
 * The local calendar date (YYYY-MM-DD) of the UTC instant `ms` in `timeZone`: the day a policy's
 * `maxReductionWh.perDay` and a context's `committedTodayWh` count in (local midnight to midnight).
 */
export function localDate(ms: number, timeZone: string): string {
  return localMinute(ms, timeZone).date;
}

/**
 * The local minute of each whole UTC minute in [startMs, startMs + count minutes). `Intl` is asked
 * once per 15-minute UTC block: every zone in use today has an offset that is a multiple of 15
 * minutes, so wall-clock minutes advance in step with UTC minutes within a block.
 */
export function localMinutes(startMs: number, count: number, timeZone: string): LocalMinute[] {
  const out: LocalMinute[] = [];
  let blockStart = Number.NaN;
  let base: LocalMinute | undefined;
  for (let i = 0; i < count; i++) {
    const ms = startMs + i * MINUTE_MS;
    const block = Math.floor(ms / BLOCK_MS) * BLOCK_MS;
    if (block !== blockStart || !base) {
      blockStart = block;
      base = localMinute(block, timeZone);
    }
    const minute = base.minuteOfDay + Math.floor((ms - block) / MINUTE_MS);
    out.push(
      minute < 1440
        ? { weekday: base.weekday, minuteOfDay: minute, date: base.date }
        : localMinute(ms, timeZone),
    );
  }
  return out;
}
