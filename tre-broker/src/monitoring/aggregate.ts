/**
 * The arithmetic of one release, pure (paper III-A): which households of a group can contribute to
 * an interval, the clamped exact total of those that do and its sensitivity, and the noised total.
 *
 * A household can contribute when its in-bounds readings cover the whole interval; with any reading
 * excluded by the bounds check it counts as excluded, otherwise as missing (these counts stay in the
 * TRE). Each contribution is clamped to [0, bound], bound = capacity x interval; the sensitivity
 * Delta is the largest bound of any member of the group (at least 1 Wh), whoever contributes, and
 * the total gets discrete Laplace noise of scale Delta/epsilon.
 */
import type { WindowReadings } from '../ingest/reading-store.js';
import { noiseBound, type RandomSource, sampleDiscreteLaplace } from './discrete-laplace.js';

export interface Member {
  meterId: string;
  /** The clamping bound of its contribution: installed capacity x interval, in Wh. */
  boundWh: number;
}

export interface Contributions {
  /** Members whose reading can be used, with their clamped contribution. */
  included: { meterId: string; wh: number }[];
  excluded: number;
  missing: number;
  totalWh: number;
  deltaWh: number;
}

/** Who contributes what to one interval's total, with the clamped exact total and Delta. */
export function contributions(
  members: readonly Member[],
  reported: ReadonlyMap<string, WindowReadings>,
  intervalMinutes: number,
): Contributions {
  let totalWh = 0;
  let deltaWh = 1;
  const included: { meterId: string; wh: number }[] = [];
  let excluded = 0;
  for (const { meterId, boundWh } of members) {
    deltaWh = Math.max(deltaWh, boundWh);
    const r = reported.get(meterId);
    if (!r) continue;
    if (r.excluded > 0) excluded++;
    else if (r.coveredMinutes >= intervalMinutes) {
      const wh = Math.min(Math.max(r.wh, 0), boundWh);
      included.push({ meterId, wh });
      totalWh += wh;
    }
  }
  return { included, excluded, missing: members.length - included.length - excluded, totalWh, deltaWh };
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
