/**
 * Retention, as pure arithmetic over plain values: how far back a household's raw readings may be
 * deleted, and when a DR event's pseudonym map may go. A reading (and the alerts raised about it)
 * is deleted only once nothing the TRE still has to do can read it:
 *  (a) billed: its supplier's billing period that contains it is closed and its statements issued
 *      (the ledger line of a reading is written when the reading arrives, and a statement is
 *      re-sent from its stored signature; neither reads the reading again);
 *  (b) released: the monitoring release of its interval is past, by the release schedule (a reading
 *      of a household that was withheld or had no budget left counts too) and by the group released
 *      least far (a release that failed is retried, and still needs its readings);
 *  (c) outside every baseline still to come: a DR baseline looks back `lookbackDays` (30) from its
 *      window's start; a future event's window starts after now, and an accepted event that is not
 *      yet settled still needs the baseline of its own window.
 * The horizon is the earliest of the three: readings whose interval starts before it may be deleted.
 */

import { type Calendar, periodAt } from '../billing/period-calendar.js';
import type { EventStage } from '../demand-response/dr-book.js';

const DAY = 86_400_000;

export interface RetentionFacts {
  /** The TRE clock. */
  now: number;
  /** (a) Readings before this are billed (`billedBefore`); undefined: nothing of this supplier's is. */
  billedBefore: number | undefined;
  /** (b) The monitoring release schedule: interval length and delay after the interval's end. */
  releaseMs: number;
  releaseDelayMs: number;
  /** (b) Start of the newest interval released for the group released least far; undefined: no release yet. */
  slowestRelease: number | undefined;
  /** (c) How far back a baseline looks from its window's start, in days (`BASELINE_LOOKBACK_DAYS`). */
  baselineLookbackDays: number;
  /** (c) Window start of the earliest accepted event not yet settled; undefined: none. */
  earliestUnsettledWindow: number | undefined;
}

/**
 * (a) End of the last period stated: the period of `calendar` that starts at `lastStated` (the
 * newest statement's period start). Statements close every open ledger line before their period
 * end, so everything before it is billed (a later reading is billed in the next statement).
 */
export function billedBefore(
  calendar: Calendar | undefined,
  lastStated: number | undefined,
): number | undefined {
  if (!calendar || calendar.length === 0 || lastStated === undefined) return undefined;
  return periodAt(calendar, lastStated).end;
}

/**
 * (b) Interval `s` is released at s + releaseMs + releaseDelayMs: every interval before
 * floor((now - delay) / releaseMs) x releaseMs has passed its release time. No later than the end
 * of the slowest group's last released interval.
 */
export function releasedBefore(
  now: number,
  releaseMs: number,
  releaseDelayMs: number,
  slowestRelease: number | undefined,
): number {
  const bySchedule = Math.floor((now - releaseDelayMs) / releaseMs) * releaseMs;
  return slowestRelease === undefined ? bySchedule : Math.min(bySchedule, slowestRelease + releaseMs);
}

/** (c) The earliest reading a baseline may still read: `lookbackDays` before now or before an unsettled window. */
export function baselineFrom(
  now: number,
  lookbackDays: number,
  earliestUnsettledWindow: number | undefined,
): number {
  return Math.min(now, earliestUnsettledWindow ?? now) - lookbackDays * DAY;
}

/**
 * Readings (of one supplier's households) whose interval starts before the returned instant may be
 * deleted; undefined: none may.
 */
export function retentionHorizon(f: RetentionFacts): number | undefined {
  if (f.billedBefore === undefined) return undefined;
  return Math.min(
    f.billedBefore,
    releasedBefore(f.now, f.releaseMs, f.releaseDelayMs, f.slowestRelease),
    baselineFrom(f.now, f.baselineLookbackDays, f.earliestUnsettledWindow),
  );
}

/**
 * A DR event's pseudonym map (its bids: household, bid id, pseudonym) may go once the event is
 * settled: its credits were posted at acceptance and its reversals in the settlement's own
 * transaction, and compliance is built from the bids inside that transaction. Before that,
 * acceptance needs the live bids and settlement the accepted ones. A cancelled event's map may go
 * too: its bids were voided and its compensating lines posted in the cancellation's transaction,
 * and its cancellation round was built from the bids read there; nothing settles it later.
 */
export function pseudonymsMayGo(stage: EventStage): boolean {
  return stage === 'settled' || stage === 'cancelled';
}
