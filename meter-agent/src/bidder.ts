/**
 * The household's bidder: its own recent intervals, and for a DR event the household policy's
 * decision (hems-policy `decide`) given exactly the intervals the TRE's 10-in-10 baseline for that
 * window is made of, so bids stay within what the TRE accepts. The daemon and the simulator's
 * households bid through it.
 */
import type { IntervalRecord } from '@tre/hardware';
import { decide, type LoadState, type Policy } from '@tre/hems-policy';
import { BASELINE_LOOKBACK_DAYS, baselineIntervals, type Clock, type DrAnnouncement } from '@tre/protocol';
import type { BidProposal } from './household-agent.js';

/** Enough for the baseline's lookback at 15-minute intervals; nothing older is needed. */
const KEPT_INTERVALS = (BASELINE_LOOKBACK_DAYS + 1) * 96;

export interface BidderOptions {
  /** Without a policy the household never bids. */
  policy: Policy | undefined;
  /** IANA time zone of the household (the policy's windows are local). */
  timeZone: string;
  clock: Clock;
  /** Loads the policy must not offer (e.g. `unavailable`: this box cannot switch them). */
  loads?: Record<string, LoadState>;
}

export class Bidder {
  // Three numbers per interval, not an object: a simulator runs thousands of these for weeks.
  private readonly starts: number[] = [];
  private readonly minutes: number[] = [];
  private readonly energies: number[] = [];

  constructor(private readonly opts: BidderOptions) {}

  /** A closed interval of the meter: kept while the baseline can still look back to it. */
  record(interval: IntervalRecord): void {
    this.starts.push(Date.parse(interval.intervalStart));
    this.minutes.push(interval.intervalMinutes);
    this.energies.push(interval.importWh);
    const excess = Math.max(0, this.starts.length - KEPT_INTERVALS);
    for (const list of [this.starts, this.minutes, this.energies]) list.splice(0, excess);
  }

  /** What the household policy proposes for `event`. */
  propose(event: DrAnnouncement['event']): BidProposal {
    const { policy, timeZone, clock, loads } = this.opts;
    if (!policy) return { reason: 'no policy configured' };
    const decision = decide(policy, event, {
      timeZone,
      ...(loads ? { loads } : {}),
      now: new Date(clock.now()).toISOString(),
      recentConsumption: baselineIntervals(
        this.starts.map((start, i) => ({
          intervalStart: new Date(start).toISOString(),
          intervalMinutes: this.minutes[i]!,
          energyWh: this.energies[i]!,
        })),
        Date.parse(event.windowStart),
        Date.parse(event.windowEnd),
      ),
    });
    return decision.kind === 'bid' ? { bid: decision.bid } : { reason: decision.reason };
  }
}
