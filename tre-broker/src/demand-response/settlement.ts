/**
 * DR settlement of one accepted bid, pure and in integers where money is concerned: the reduction
 * is baseline - measured (none without a baseline or with readings missing); the bid is delivered
 * when the reduction reaches `threshold` of its quantity. A shortfall reverses the undelivered share
 * of the credit (all of it below 50 %), kept in thousandths.
 */
export interface Settled {
  delivered: boolean;
  /** Share of the credit kept, in thousandths (1000 = all). */
  keepMilli: number;
  /** The reversal line in micro-minor units (positive: the household gives back), 0 if none. */
  reversalMicro: number;
}

export function settle(
  bid: { quantityWh: number; pricePerMWh: number },
  baselineWh: number | undefined,
  measured: { wh: number; complete: boolean },
  threshold: number,
): Settled {
  const reduction = baselineWh === undefined || !measured.complete ? 0 : baselineWh - measured.wh;
  const ratio = Math.max(0, Math.min(1, reduction / bid.quantityWh));
  const delivered = ratio >= threshold;
  const keep = delivered ? 1 : ratio < 0.5 ? 0 : ratio;
  const keepMilli = Math.round(keep * 1000);
  const credit = -bid.quantityWh * bid.pricePerMWh;
  return { delivered, keepMilli, reversalMicro: Math.trunc((-credit * (1000 - keepMilli)) / 1000) };
}
