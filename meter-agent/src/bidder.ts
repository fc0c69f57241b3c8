/**
 * The household's bidder: its own recent intervals, and for a DR event the household policy's
 * decision (hems-policy `decide`) given exactly the intervals the TRE's 10-in-10 baseline for that
 * window is made of, so bids stay within what the TRE accepts; the energy the household already
 * committed on the event's local day; and, in the daemon, its comfort sensors. The daemon and the
 * simulator's households bid through it.
 */
import type { IntervalRecord } from '@tre/hardware';
import {
  type ComfortRule,
  decide,
  type LoadState,
  localDate,
  type Policy,
  type SensorReading,
  type SkippedLoad,
} from '@tre/hems-policy';
import { BASELINE_LOOKBACK_DAYS, baselineIntervals, type Clock, type DrAnnouncement } from '@tre/protocol';
import type { SensorState } from './comfort-sensors.js';
import type { BidProposal, CommittedBid } from './household-agent.js';

/** Enough for the baseline's lookback at 15-minute intervals; nothing older is needed. */
const KEPT_INTERVALS = (BASELINE_LOOKBACK_DAYS + 1) * 96;

/** The household's comfort sensors, as the bidder asks them (`ComfortSensors` in the daemon). */
export interface SensorSource {
  /** Fresh readings by sensor name; unknown sensors are left out. */
  readings(): Record<string, SensorReading>;
  /** One sensor: a fresh reading, or unknown and why. */
  state(name: string): SensorState;
}

export interface BidderOptions {
  /** Without a policy the household never bids. */
  policy: Policy | undefined;
  /** IANA time zone of the household: the policy's windows are local, and so is its day. */
  timeZone: string;
  clock: Clock;
  /** Loads the policy must not offer (e.g. `unavailable`: this box cannot switch them). */
  loads?: Record<string, LoadState>;
  /**
   * The comfort sensors (the daemon has them; the simulator's households do not). With them, a
   * load a temperature rule protects is never offered while that rule's sensor has no fresh
   * reading, whatever the rule's `withoutReading` says: the safe default. Without them, the
   * policy's own rules apply to a context without sensors.
   */
  sensors?: SensorSource;
  /** Info lines: why a load was not offered. Never a reading, a quantity or a household id. */
  log?: (line: string) => void;
}

/**
 * The Wh of `committed` bids whose window starts on the same local calendar day, in `timeZone`,
 * as `windowStart`: the policy's `committedTodayWh` for an event starting then. The day runs from
 * local midnight to local midnight (hems-policy `localDate`, as the policy's `perDay` counts);
 * a bid counts wholly on the day its window starts.
 */
export function committedOnDayOf(
  windowStart: string,
  committed: readonly CommittedBid[],
  timeZone: string,
): number {
  const day = localDate(Date.parse(windowStart), timeZone);
  return committed
    .filter((c) => localDate(Date.parse(c.windowStart), timeZone) === day)
    .reduce((sum, c) => sum + c.quantityWh, 0);
}

type TemperatureRule = Extract<ComfortRule, { rule: 'min-indoor-temperature' }>;

const isTemperatureRule = (r: ComfortRule): r is TemperatureRule => r.rule === 'min-indoor-temperature';

/** The policy with every temperature rule at `withoutReading: never-shed`: an unknown sensor holds its loads. */
export function neverShedWithoutReading(policy: Policy): Policy {
  return {
    ...policy,
    comfort: policy.comfort.map((r) =>
      isTemperatureRule(r) ? { ...r, withoutReading: 'never-shed' as const } : r,
    ),
  };
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

  /** What the household policy proposes for `event`, given the bids that count against its daily limit. */
  propose(event: DrAnnouncement['event'], committed: readonly CommittedBid[] = []): BidProposal {
    const { policy, timeZone, clock, loads, sensors } = this.opts;
    if (!policy) return { reason: 'no policy configured' };
    const readings = sensors?.readings();
    const now = new Date(clock.now()).toISOString();
    const decision = decide(sensors ? neverShedWithoutReading(policy) : policy, event, {
      timeZone,
      now,
      ...(loads ? { loads } : {}),
      ...(readings ? { sensors: readings } : {}),
      committedTodayWh: committedOnDayOf(event.windowStart, committed, timeZone),
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
    if (sensors && readings) this.logComfortSkips(event.eventId, policy, decision.skippedLoads, readings);
    return decision.kind === 'bid' ? { bid: decision.bid } : { reason: decision.reason };
  }

  /**
   * One line per load a temperature rule held back, naming the rule's sensor and why; the policy's
   * own messages are not used, as they carry the reading.
   */
  private logComfortSkips(
    eventId: string,
    policy: Policy,
    skipped: readonly SkippedLoad[],
    readings: Record<string, SensorReading>,
  ): void {
    const log = this.opts.log;
    if (!log) return;
    const nowMs = this.opts.clock.now();
    for (const skip of skipped) {
      if (skip.code !== 'no-sensor-reading' && skip.code !== 'comfort-temperature') continue;
      for (const rule of policy.comfort.filter(isTemperatureRule)) {
        if (rule.loads && !rule.loads.includes(skip.name)) continue;
        const reading = readings[rule.sensor];
        const fresh =
          reading !== undefined && nowMs - Date.parse(reading.at) <= rule.maxReadingAgeMinutes * 60_000;
        if (skip.code === 'comfort-temperature' && fresh && reading.celsius < rule.minCelsius) {
          log(
            `event ${eventId}: ${skip.name} not offered: sensor ${rule.sensor} is below the policy's minimum`,
          );
          break;
        }
        if (skip.code === 'no-sensor-reading' && !fresh) {
          const state = this.opts.sensors?.state(rule.sensor);
          const why =
            reading !== undefined
              ? `its reading is older than the rule's ${rule.maxReadingAgeMinutes} min`
              : state && !state.known
                ? state.why
                : 'no reading';
          log(
            `event ${eventId}: ${skip.name} not offered: sensor ${rule.sensor} is unknown (${why}), so its temperature rule cannot be checked`,
          );
          break;
        }
      }
    }
  }
}
