/**
 * `dp-utility`: the error of the released group total against the true total, by group size (10 to
 * 10,000 households), per-household contribution bound and epsilon, on the simulator's household
 * profiles (30-minute energies at times spread over a winter week; 30 % of the households charge an
 * EV at 3.7, 7.4 or 11 kW, 35 % have a heat pump). The TRE's rule (tre-broker/src/monitoring/
 * aggregate.ts): each contribution is clamped to [0, min(bound, capacity x 30 min)], Delta =
 * min(bound, largest capacity x 30 min in the group), discrete Laplace noise of scale
 * Delta/epsilon from the TRE's own sampler. `capacity` is the rule before the bound (no clamping
 * below capacity, Delta = largest capacity x 30 min).
 *
 * Per row, means over the intervals of each interval's error relative to its true total: the noise
 * (E|noise|, exact for the discrete Laplace), the clamping bias (true - clamped: the DNO does not
 * see it and it is not in the stated noise bound), their combination E|released - true| (exact),
 * and the measured combined error of the sampled releases (mean and 95th percentile). The last
 * column is the former baseline, E|noise| / mean true total.
 */
import { householdProfile, powerW } from '@tre/sim';
import { DEFAULT_CONTRIBUTION_BOUND_WH, sampleDiscreteLaplace } from '@tre/tre-broker';
import type { BenchResult } from './report.js';
import { percentile } from './report.js';

/**
 * The TRE's default contribution bound, Wh per 30 minutes (tre-broker/src/monitoring/aggregate.ts:
 * 11 kW x 30 min, the largest household load in ../shared/reference/meter-and-grid-facts.md).
 */
export const DEFAULT_BOUND_WH = DEFAULT_CONTRIBUTION_BOUND_WH;

export type Bound = number | 'capacity';

export interface DpUtilityOptions {
  sizes: number[];
  /** Each compared at epsilon 1 (Wh per 30 minutes, or `capacity`: the rule before the bound). */
  bounds: Bound[];
  /** Each at the default bound (epsilon 1 is in the bound rows). */
  epsilons: [number, number][];
  trials: number;
}

export const DEFAULT_DP_UTILITY: DpUtilityOptions = {
  sizes: [10, 100, 1_000, 10_000],
  bounds: ['capacity', 2_000, 4_000, DEFAULT_BOUND_WH],
  epsilons: [
    [1, 10],
    [1, 2],
  ],
  trials: 200,
};

/** E|N - d| for N discrete Laplace with P(N = k) ~ a^|k| and an integer d >= 0. */
export function expectedAbsOffset(a: number, d: number): number {
  return d + (2 * a ** (d + 1)) / ((1 + a) * (1 - a));
}

/** A fraction as a percentage, to 2 decimals (a number: the JSON keeps numbers). */
const pct = (x: number) => Math.round(10_000 * x) / 100;

export function runDpUtility(opts: DpUtilityOptions = DEFAULT_DP_UTILITY): BenchResult {
  const maxSize = Math.max(...opts.sizes);
  const profiles = Array.from({ length: maxSize }, (_, i) => householdProfile(i));
  const capacityWh = profiles.map((p) => Math.floor(p.capacityW / 2));
  const start = Date.UTC(2026, 0, 12);
  // Each household's 30-minute energy at each sampled interval (5-minute steps), Wh.
  const energies = Array.from({ length: opts.trials }, (_, trial) => {
    const t = start + Math.floor((trial * 7 * 48) / opts.trials) * 1_800_000;
    return Int32Array.from(profiles, (h, i) => {
      let wh = 0;
      for (let m = 0; m < 30; m += 5) wh += powerW(h, t + m * 60_000) / 12;
      return Math.min(Math.round(wh), capacityWh[i]!);
    });
  });
  const configurations: { bound: Bound; epsilon: [number, number] }[] = [
    ...opts.bounds.map((bound) => ({ bound, epsilon: [1, 1] as [number, number] })),
    ...opts.epsilons
      .filter(([p, q]) => p !== q)
      .map((epsilon) => ({ bound: DEFAULT_BOUND_WH as Bound, epsilon })),
  ];
  const rows: (string | number)[][] = [];
  const summary: Record<string, number> = { defaultBoundWh: DEFAULT_BOUND_WH };
  for (const size of opts.sizes) {
    const largestCapacity = Math.max(...capacityWh.slice(0, size));
    for (const { bound, epsilon } of configurations) {
      const [p, q] = epsilon;
      const clampAt = bound === 'capacity' ? Number.POSITIVE_INFINITY : bound;
      const delta = Math.max(1, Math.min(clampAt, largestCapacity));
      const a = Math.exp(-p / (delta * q));
      let meanTotal = 0;
      let noise = 0;
      let bias = 0;
      let combined = 0;
      const measured: number[] = [];
      for (const row of energies) {
        let trueWh = 0;
        let clampedWh = 0;
        for (let i = 0; i < size; i++) {
          trueWh += row[i]!;
          clampedWh += Math.min(row[i]!, clampAt);
        }
        const cut = trueWh - clampedWh;
        meanTotal += trueWh / opts.trials;
        noise += expectedAbsOffset(a, 0) / trueWh / opts.trials;
        bias += cut / trueWh / opts.trials;
        combined += expectedAbsOffset(a, cut) / trueWh / opts.trials;
        const released = clampedWh + sampleDiscreteLaplace(delta * q, p);
        measured.push(Math.abs(released - trueWh) / trueWh);
      }
      const measuredMean = measured.reduce((s, x) => s + x, 0) / measured.length;
      measured.sort((x, y) => x - y);
      if (p === q && (bound === DEFAULT_BOUND_WH || bound === 'capacity')) {
        const at = `${bound === 'capacity' ? 'Capacity' : ''}At${size}`;
        summary[`noisePercent${at}`] = pct(noise);
        summary[`clampingBiasPercent${at}`] = pct(bias);
        summary[`combinedPercent${at}`] = pct(combined);
      }
      rows.push([
        size,
        `${p}/${q}`,
        bound === 'capacity' ? 'capacity' : bound,
        delta,
        Math.round(meanTotal),
        pct(noise),
        pct(bias),
        pct(combined),
        pct(measuredMean),
        pct(percentile(measured, 95)),
        pct(expectedAbsOffset(a, 0) / meanTotal),
      ]);
    }
  }
  return {
    name: 'dp-utility',
    description: `error of released 30-minute group totals (clamped to the bound, discrete Laplace of scale Delta/epsilon) against the true total, ${opts.trials} intervals of a winter week per cell`,
    columns: [
      'households',
      'epsilon',
      'bound Wh/30 min',
      'Delta Wh',
      'mean true total Wh',
      'noise %',
      'clamping bias %',
      'combined %',
      'measured combined %',
      'measured p95 %',
      'baseline noise/mean total %',
    ],
    rows,
    summary,
    notes: [
      'Means over the intervals of each one relative to its own true total (night intervals, a third of the mean, weigh in): noise = E(abs(noise)), clamping bias = true minus clamped total (the DNO does not see it), combined = E(abs(released - true)), both exact; measured: the sampled releases.',
      `Baseline: the mechanism's expected error relative to the mean true total (the former figure); the bound rows are at epsilon 1, the other epsilons at the default bound ${DEFAULT_BOUND_WH.toLocaleString('en-US')} Wh.`,
    ],
  };
}
