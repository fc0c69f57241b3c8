/**
 * Exact sampling of the discrete Laplace (two-sided geometric) distribution on the integers,
 *   P[X = x] = (1 - a) / (1 + a) * a^|x|,  a = exp(-1/scale),
 * following Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential Privacy"
 * (NeurIPS 2020), Algorithms 1 and 2. The scale is a rational t/s and every step uses integer
 * arithmetic and uniform integers from node:crypto: no floating point and no Math.random in the
 * sampling path, so the output distribution is exact (no Mironov-style floating-point leaks).
 */
import { randomBytes } from 'node:crypto';

/** Uniform integers in [0, n) for n <= 2^48, by rejection from crypto bytes (buffered). */
export interface RandomSource {
  uniformInt(n: number): number;
}

export class CryptoRandom implements RandomSource {
  private buf = Buffer.alloc(0);
  private offset = 0;

  uniformInt(n: number): number {
    if (!Number.isSafeInteger(n) || n < 1 || n > 2 ** 48)
      throw new RangeError(`uniformInt range ${n} out of [1, 2^48]`);
    if (n === 1) return 0;
    const limit = 2 ** 48 - (2 ** 48 % n); // reject the top partial block: unbiased
    for (;;) {
      if (this.offset + 6 > this.buf.length) {
        this.buf = randomBytes(6 * 1024);
        this.offset = 0;
      }
      const v = this.buf.readUIntBE(this.offset, 6);
      this.offset += 6;
      if (v < limit) return v % n;
    }
  }
}

const defaultRandom = new CryptoRandom();

/** Bernoulli(num/den), exact. */
function bernoulli(num: number, den: number, rnd: RandomSource): boolean {
  return rnd.uniformInt(den) < num;
}

/** Bernoulli(exp(-num/den)) for num/den >= 0 (CKS Algorithm 1). */
export function bernoulliExp(num: number, den: number, rnd: RandomSource = defaultRandom): boolean {
  if (num < 0 || den < 1) throw new RangeError('bernoulliExp needs num >= 0, den >= 1');
  while (num > den) {
    // exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
    if (!bernoulliExp(1, 1, rnd)) return false;
    num -= den;
  }
  let k = 1;
  while (bernoulli(num, den * k, rnd)) k++;
  return k % 2 === 1;
}

/**
 * One sample of the discrete Laplace with scale t/s (CKS Algorithm 2). For scale Delta/epsilon
 * with epsilon = p/q, use t = Delta * q and s = p.
 */
export function sampleDiscreteLaplace(t: number, s: number, rnd: RandomSource = defaultRandom): number {
  if (!Number.isSafeInteger(t) || !Number.isSafeInteger(s) || t < 1 || s < 1)
    throw new RangeError('scale t/s needs positive integers');
  for (;;) {
    const u = rnd.uniformInt(t);
    if (!bernoulliExp(u, t, rnd)) continue;
    let v = 0;
    while (bernoulliExp(1, 1, rnd)) v++;
    const x = u + t * v;
    const y = Math.floor(x / s);
    const negative = rnd.uniformInt(2) === 1;
    if (negative && y === 0) continue;
    return negative ? -y : y;
  }
}

/** The pmf (floating point; for tests and for stating bounds, never for sampling). */
export function discreteLaplacePmf(x: number, scale: number): number {
  const a = Math.exp(-1 / scale);
  return ((1 - a) / (1 + a)) * a ** Math.abs(x);
}

/** Smallest k with P[|X| >= k] <= beta: |noise| < k with probability at least 1 - beta. */
export function noiseBound(scale: number, beta = 0.05): number {
  const a = Math.exp(-1 / scale);
  // P[|X| >= k] = 2 a^k / (1 + a) for k >= 1
  return Math.max(1, Math.ceil(Math.log((beta * (1 + a)) / 2) / Math.log(a)));
}
