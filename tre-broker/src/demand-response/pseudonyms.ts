/**
 * Single-use pseudonyms and the order in which pseudo-bids are released: 128 random bits each,
 * and a uniformly random permutation (Fisher-Yates with node:crypto), so neither the name nor the
 * position of a bid says anything about the household or when it bid.
 */
import { randomBytes, randomInt } from 'node:crypto';

export function newPseudonym(): string {
  return randomBytes(16).toString('base64url');
}

export function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
