/**
 * The arithmetic of one release, pure (paper III-A): which households of a group can contribute to
 * an interval, the clamped exact total of those that do and its sensitivity, and the noised total.
 *
 * A household can contribute when its in-bounds readings cover the whole interval; with any reading
 * excluded by the bounds check it counts as excluded, otherwise as missing (these counts stay in the
 * TRE). Each contribution is clamped to [0, min(bound, capacity x interval)], where the bound is the
 * regulator's per-household contribution bound (`intervalBoundWh`; the same for every member and
 * never derived from the readings); the sensitivity Delta = min(bound, the largest capacity x
 * interval of any member), at least 1 Wh, whoever contributes, and the total gets discrete Laplace
 * noise of scale Delta/epsilon.
 */
import type { WindowReadings } from '../ingest/reading-store.js';
import { noiseBound, type RandomSource, sampleDiscreteLaplace } from './discrete-laplace.js';

/**
 * The per-household contribution bound per 30-minute interval when the regulator signs none, Wh:
 * 11 kW x 30 min, the largest household load in public figures (an 11 kW three-phase EV charger,
 * ../shared/reference/meter-and-grid-facts.md, "Households"; the other loads listed there, a
 * 7.4 kW charger with a 3 kW heat pump included, stay below it). Chosen from public statistics,
 * never from the data (tre-broker/README.md, "The guarantee, per household, under the defaults").
 */
export const DEFAULT_CONTRIBUTION_BOUND_WH = 5_500;

/** The bound for one release interval: the 30-minute bound scaled to its length (15 minutes: half). */
export function intervalBoundWh(boundWhPer30Min: number, intervalMinutes: number): number {
  return Math.max(1, Math.floor((boundWhPer30Min * intervalMinutes) / 30));
}

export interface Member {
  meterId: string;
  /** Installed capacity x interval, in Wh (a reading above it was excluded by the bounds check). */
  capacityWh: number;
}

export interface Contributions {
  /** Members whose reading can be used, with their clamped contribution and what clamping cut off. */
  included: { meterId: string; wh: number; clippedWh: number }[];
  excluded: number;
  missing: number;
  totalWh: number;
  deltaWh: number;
}

/**
 * Who contributes what to one interval's total, with the clamped exact total and Delta; `boundWh`
 * is the contribution bound of this interval (`intervalBoundWh`).
 */
export function contributions(
  members: readonly Member[],
  reported: ReadonlyMap<string, WindowReadings>,
  intervalMinutes: number,
  boundWh: number,
): Contributions {
  let totalWh = 0;
  let largestCapacityWh = 0;
  const included: Contributions['included'] = [];
  let excluded = 0;
  for (const { meterId, capacityWh } of members) {
    largestCapacityWh = Math.max(largestCapacityWh, capacityWh);
    const r = reported.get(meterId);
    if (!r) continue;
    if (r.excluded > 0) excluded++;
    else if (r.coveredMinutes >= intervalMinutes) {
      const used = Math.max(r.wh, 0);
      const wh = Math.min(used, capacityWh, boundWh);
      included.push({ meterId, wh, clippedWh: used - wh });
      totalWh += wh;
    }
  }
  return {
    included,
    excluded,
    missing: members.length - included.length - excluded,
    totalWh,
    deltaWh: Math.max(1, Math.min(boundWh, largestCapacityWh)),
  };
}

/** The noised total for epsilon = p/q: total + discrete Laplace of scale Delta x q / p. */
export function aggregate(
  totalWh: number,
  deltaWh: number,
  [p, q]: readonly [number, number],
  random?: RandomSource,
): { noisyTotalWh: number; noiseScaleWh: number; bound95Wh: number } {
  const noiseScaleWh = (deltaWh * q) / p;
  return {
    noisyTotalWh: totalWh + sampleDiscreteLaplace(deltaWh * q, p, random),
    noiseScaleWh,
    bound95Wh: noiseBound(noiseScaleWh, 0.05),
  };
}
