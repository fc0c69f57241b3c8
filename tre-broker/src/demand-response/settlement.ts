/**
 * DR settlement of one accepted bid, pure and in integers only (no ratio, no float):
 *  - reduction = baseline - measured, clamped to [0, quantity] (0 without a baseline or with
 *    readings missing);
 *  - keep share, in per mille, rounded down: keepMilli = floor(reduction x 1000 / quantity);
 *  - delivered when keepMilli >= thresholdMilli (equivalently reduction x 1000 >= threshold x
 *    quantity): the whole credit is kept;
 *  - otherwise the share is kept pro rata from 500 per mille on, nothing below 500;
 *  - the reversal (what the household gives back) is credit x (1000 - keep) / 1000 micro-minor
 *    units, rounded down (the household keeps the fraction of a micro-minor unit).
 */
export interface Settled {
  delivered: boolean;
  /** Share of the credit kept, in per mille (1000 = all). */
  keepMilli: number;
  /** The reversal line in micro-minor units (positive: the household gives back), 0 if none. */
  reversalMicro: number;
}

/** Below this share (per mille) of the bid delivered, the whole credit is reversed. */
export const MIN_KEEP_MILLI = 500;

/** floor(n / d) for safe non-negative integers n and positive d, without a fractional intermediate. */
function floorDiv(n: number, d: number): number {
  return (n - (n % d)) / d;
}

/** floor(a x b / 1000) for a safe non-negative integer a and an integer b in [0, 1000], exactly. */
function perMilleOf(a: number, b: number): number {
  return floorDiv(a, 1000) * b + floorDiv((a % 1000) * b, 1000);
}

function assertSafe(name: string, n: number, min: number): void {
  if (!Number.isSafeInteger(n) || n < min) throw new RangeError(`${name} must be a safe integer >= ${min}`);
}

export function settle(
  bid: { quantityWh: number; pricePerMWh: number },
  baselineWh: number | undefined,
  measured: { wh: number; complete: boolean },
  thresholdMilli: number,
): Settled {
  if (!Number.isInteger(thresholdMilli) || thresholdMilli < 1 || thresholdMilli > 1000)
    throw new RangeError('the delivery threshold is an integer per mille in [1, 1000], e.g. 900');
  const { quantityWh, pricePerMWh } = bid;
  assertSafe('quantityWh', quantityWh, 1);
  assertSafe('pricePerMWh', pricePerMWh, 0);
  assertSafe('quantityWh x 1000', quantityWh * 1000, 0);
  const credit = quantityWh * pricePerMWh;
  assertSafe('the credit quantityWh x pricePerMWh', credit, 0);
  const raw = baselineWh === undefined || !measured.complete ? 0 : baselineWh - measured.wh;
  const reduction = Math.max(0, Math.min(quantityWh, raw));
  const share = floorDiv(reduction * 1000, quantityWh);
  const delivered = share >= thresholdMilli;
  const keepMilli = delivered ? 1000 : share < MIN_KEEP_MILLI ? 0 : share;
  return { delivered, keepMilli, reversalMicro: perMilleOf(credit, 1000 - keepMilli) };
}

/**
 * A bid whose household overrode its shed (took its loads back): not delivered, whatever the
 * readings say, and the whole credit reversed. The event's terms carry no penalty for
 * non-delivery, so nothing more.
 */
export function settleOverridden(bid: { quantityWh: number; pricePerMWh: number }): Settled {
  const credit = bid.quantityWh * bid.pricePerMWh;
  assertSafe('the credit quantityWh x pricePerMWh', credit, 0);
  return { delivered: false, keepMilli: 0, reversalMicro: credit };
}
