/**
 * Test support: a deterministic RandomSource (mulberry32, two outputs per 48-bit draw, rejection
 * for uniformity), so two runs of a scenario draw the same noise. Never used outside tests.
 */
import type { RandomSource } from '../../src/monitoring/discrete-laplace.js';

export function seededRandom(seed: number): RandomSource {
  let a = seed >>> 0;
  const next32 = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    uniformInt(n: number): number {
      if (n === 1) return 0;
      const limit = 2 ** 48 - (2 ** 48 % n);
      for (;;) {
        const v = (next32() % 2 ** 16) * 2 ** 32 + next32();
        if (v < limit) return v % n;
      }
    },
  };
}
