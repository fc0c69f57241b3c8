/** DR settlement of one accepted bid, without SQLite or MQTT. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { settle } from '../src/demand-response/settlement.js';

const bid = { quantityWh: 1_000, pricePerMWh: 200_000 }; // credit 200,000,000 micro-minor
const complete = (wh: number) => ({ wh, complete: true });

/**
 * The rule recomputed independently in BigInt, from the README's wording: the share kept is the
 * largest k (per mille) with k x quantity <= 1000 x reduction; delivered when 1000 x reduction >=
 * threshold x quantity; below 500 per mille nothing is kept; the reversal is the largest r with
 * 1000 x r <= credit x (1000 - keep).
 */
function reference(
  q: number,
  p: number,
  baseline: number | undefined,
  measured: { wh: number; complete: boolean },
  thresholdMilli: number,
) {
  const Q = BigInt(q);
  let red = baseline === undefined || !measured.complete ? 0n : BigInt(baseline) - BigInt(measured.wh);
  if (red < 0n) red = 0n;
  if (red > Q) red = Q;
  const delivered = 1000n * red >= BigInt(thresholdMilli) * Q;
  let share = 0n;
  while ((share + 1n) * Q <= 1000n * red) share++;
  const keep = delivered ? 1000n : share < 500n ? 0n : share;
  const credit = Q * BigInt(p);
  return { delivered, keepMilli: Number(keep), reversalMicro: Number((credit * (1000n - keep)) / 1000n) };
}

describe('settle', () => {
  it('delivered at the threshold keeps the whole credit', () => {
    expect(settle(bid, 3_000, complete(2_100), 900)).toEqual({
      delivered: true,
      keepMilli: 1000,
      reversalMicro: 0,
    });
    expect(settle(bid, 3_000, complete(2_101), 900).delivered).toBe(false); // 899 per mille
  });

  it('a partial delivery above half keeps its share; below half reverses all', () => {
    expect(settle(bid, 3_000, complete(2_300), 900)).toEqual({
      delivered: false,
      keepMilli: 700,
      reversalMicro: 60_000_000,
    });
    expect(settle(bid, 3_000, complete(2_500), 900).keepMilli).toBe(500);
    expect(settle(bid, 3_000, complete(2_501), 900)).toEqual({
      delivered: false,
      keepMilli: 0,
      reversalMicro: 200_000_000,
    });
  });

  it('rounds the share and the reversal down, in integers', () => {
    // 2 of 3 Wh: 666.67 per mille -> 666; credit 3 x 7 = 21 micro, reversal 21 x 334 / 1000 = 7.014 -> 7.
    expect(settle({ quantityWh: 3, pricePerMWh: 7 }, 10, complete(8), 900)).toEqual({
      delivered: false,
      keepMilli: 666,
      reversalMicro: 7,
    });
    // Exact where floating point is not: a credit above 2^53 / 1000. The old float formula
    // trunc(credit x (1000 - keep) / 1000) gave 522,169,035,288,511 here, one micro-unit too many.
    const wide = { quantityWh: 1_706_480, pricePerMWh: 615_677_841 };
    expect(settle(wide, 858_408, complete(0), 900)).toEqual({
      delivered: false,
      keepMilli: 503,
      reversalMicro: 522_169_035_288_510,
    });
    const big = { quantityWh: 9_007_199, pricePerMWh: 999_999_999 };
    expect(settle(big, 9_007_199, complete(4_503_599), 900)).toEqual(
      reference(big.quantityWh, big.pricePerMWh, 9_007_199, complete(4_503_599), 900),
    );
  });

  it('no baseline or incomplete readings: nothing delivered, all reversed', () => {
    expect(settle(bid, undefined, complete(0), 900).reversalMicro).toBe(200_000_000);
    expect(settle(bid, 3_000, { wh: 0, complete: false }, 900).delivered).toBe(false);
  });

  it('refuses a threshold that is not an integer per mille, saying what it must be', () => {
    for (const t of [0.9, 0, 1001, Number.NaN])
      expect(() => settle(bid, 3_000, complete(0), t)).toThrow(/integer per mille in \[1, 1000\]/);
  });

  it('equals the BigInt recomputation; the reversal is an integer between 0 and the credit (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50_000 }),
        fc.integer({ min: 0, max: 1_000_000_000 }),
        fc.option(fc.nat(100_000), { nil: undefined }),
        fc.nat(100_000),
        fc.boolean(),
        fc.integer({ min: 1, max: 1000 }),
        (quantityWh, pricePerMWh, baseline, measured, full, thresholdMilli) => {
          const m = { wh: measured, complete: full };
          const s = settle({ quantityWh, pricePerMWh }, baseline, m, thresholdMilli);
          expect(s).toEqual(reference(quantityWh, pricePerMWh, baseline, m, thresholdMilli));
          expect(Number.isSafeInteger(s.reversalMicro)).toBe(true);
          expect(s.reversalMicro).toBeGreaterThanOrEqual(0);
          expect(s.reversalMicro).toBeLessThanOrEqual(quantityWh * pricePerMWh);
          if (s.delivered) expect(s.reversalMicro).toBe(0);
        },
      ),
      { numRuns: 2_000 },
    );
  });
});
