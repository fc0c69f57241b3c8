/**
 * The real (crypto-backed) sampler against the discrete Laplace pmf: a chi-square goodness-of-fit
 * test over 200,000 draws with a critical value fixed in advance (alpha = 1e-4), a mean within 5
 * standard errors of 0, and a demonstration that the same test rejects a sampler with the wrong scale.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONTRIBUTION_BOUND_WH } from '../src/monitoring/aggregate.js';
import {
  bernoulliExp,
  CryptoRandom,
  discreteLaplacePmf,
  noiseBound,
  sampleDiscreteLaplace,
} from '../src/monitoring/discrete-laplace.js';

const N = 200_000;

/** Chi-square statistic of `samples` against the pmf at `scale`, bins merged so each expects >= 5. */
function chiSquare(samples: number[], scale: number): { stat: number; df: number } {
  const counts = new Map<number, number>();
  for (const x of samples) counts.set(x, (counts.get(x) ?? 0) + 1);
  let k = 0;
  while (N * discreteLaplacePmf(k + 1, scale) * 2 >= 5) k++;
  // Bins: (-inf, -k-1], -k..k, [k+1, inf)
  const tail =
    (N * (1 - [...Array(2 * k + 1)].reduce((a, _, i) => a + discreteLaplacePmf(i - k, scale), 0))) / 2;
  let stat = 0;
  let df = 0;
  for (let x = -k; x <= k; x++) {
    const e = N * discreteLaplacePmf(x, scale);
    stat += ((counts.get(x) ?? 0) - e) ** 2 / e;
    df++;
  }
  let lo = 0;
  let hi = 0;
  for (const [x, c] of counts) {
    if (x < -k) lo += c;
    if (x > k) hi += c;
  }
  stat += (lo - tail) ** 2 / tail + (hi - tail) ** 2 / tail;
  df += 2;
  return { stat, df: df - 1 };
}

/** Chi-square quantile (Wilson-Hilferty), for alpha = 1e-4 (z = 3.719). */
const critical = (df: number) => df * (1 - 2 / (9 * df) + 3.719 * Math.sqrt(2 / (9 * df))) ** 3;

describe('discrete Laplace sampler (CKS 2020)', () => {
  const scale = 8; // t/s = 8/1
  const samples = Array.from({ length: N }, () => sampleDiscreteLaplace(8, 1));

  it('matches the pmf (chi-square, alpha 1e-4) and has mean ~0', () => {
    const { stat, df } = chiSquare(samples, scale);
    console.log(
      `discrete Laplace: chi-square ${stat.toFixed(1)} on ${df} df, critical ${critical(df).toFixed(1)}`,
    );
    expect(stat).toBeLessThan(critical(df));
    const a = Math.exp(-1 / scale);
    const sd = Math.sqrt((2 * a) / (1 - a) ** 2);
    const mean = samples.reduce((x, y) => x + y, 0) / N;
    expect(Math.abs(mean)).toBeLessThan((5 * sd) / Math.sqrt(N));
  });

  it('the same test rejects a sampler with the wrong scale (x1.2)', () => {
    const wrong = Array.from({ length: N }, () => sampleDiscreteLaplace(48, 5)); // scale 9.6
    const { stat, df } = chiSquare(wrong, scale);
    expect(stat).toBeGreaterThan(critical(df));
  });

  it('rational scales: t/s = Delta*q/p', () => {
    const xs = Array.from({ length: 20_000 }, () => sampleDiscreteLaplace(2_500 * 2, 1)); // Delta 2500 Wh, epsilon 1/2
    const meanAbs = xs.reduce((a, x) => a + Math.abs(x), 0) / xs.length;
    expect(meanAbs).toBeGreaterThan(4_500);
    expect(meanAbs).toBeLessThan(5_500);
    const bound = noiseBound(5_000, 0.05);
    expect(xs.filter((x) => Math.abs(x) >= bound).length / xs.length).toBeLessThan(0.06);
  });

  it('at the default contribution bound and epsilon 1: scale 5,500 Wh, bound95 ~ ln(20) x 5,500', () => {
    const xs = Array.from({ length: 20_000 }, () => sampleDiscreteLaplace(DEFAULT_CONTRIBUTION_BOUND_WH, 1));
    const meanAbs = xs.reduce((a, x) => a + Math.abs(x), 0) / xs.length;
    // E|X| ~ scale and sd(|X|) ~ scale: the mean of 20,000 has a standard error of 0.7 % (4 % > 5 of them).
    expect(Math.abs(meanAbs - 5_500)).toBeLessThan(0.04 * 5_500);
    const bound = noiseBound(DEFAULT_CONTRIBUTION_BOUND_WH, 0.05);
    expect(Math.abs(bound - Math.log(20) * 5_500)).toBeLessThan(2);
    const outside = xs.filter((x) => Math.abs(x) >= bound).length;
    expect(outside).toBeLessThan(20_000 * 0.05 + 5 * Math.sqrt(20_000 * 0.05 * 0.95));
    expect(outside).toBeGreaterThan(20_000 * 0.05 - 5 * Math.sqrt(20_000 * 0.05 * 0.95));
  });

  it('Bernoulli(exp(-gamma)) is exact in distribution', () => {
    const rnd = new CryptoRandom();
    const n = 100_000;
    const hits = Array.from({ length: n }, () => bernoulliExp(3, 2, rnd)).filter(Boolean).length;
    expect(Math.abs(hits / n - Math.exp(-1.5))).toBeLessThan(
      5 * Math.sqrt((Math.exp(-1.5) * (1 - Math.exp(-1.5))) / n),
    );
  });
});
