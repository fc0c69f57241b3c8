/**
 * The regulator's tariff-shape rules (`TariffRules`, in its signed configuration), checked on every
 * supplier tariff before it is stored. They bound how much one statement can weight any stretch of
 * time against the rest: no interval priced out (floor), none far above or below the mean (ratio),
 * no price held for less than a block, no tariff shorter than a minimum. Integers only.
 */
import type { Tariff, TariffRules } from '@tre/protocol';

/** A stretch of the supplier's stored prices (the reference window before a new tariff). */
export interface PriceSpan {
  minutes: number;
  pricePerMWh: number;
}

export type TariffRuleProblem = {
  reason: 'TARIFF_TOO_SHORT' | 'TARIFF_BELOW_FLOOR' | 'TARIFF_PRICE_RATIO' | 'TARIFF_BLOCK_TOO_SHORT';
  message: string;
};

/** How far back the supplier's stored prices count in the reference mean. */
export const RATIO_WINDOW_MS = 30 * 86_400_000;

/** Why `t` breaks the rules, if it does: minimum length, floor, ratio to the mean, constant-price blocks. */
export function checkTariffShape(
  t: Tariff,
  rules: TariffRules,
  preceding: readonly PriceSpan[] = [],
): TariffRuleProblem | undefined {
  const from = Date.parse(t.validFrom);
  const at = (i: number) => new Date(from + i * t.intervalMinutes * 60_000).toISOString();
  const minutes = t.pricesPerMWh.length * t.intervalMinutes;
  if (minutes < rules.minTariffMinutes)
    return {
      reason: 'TARIFF_TOO_SHORT',
      message: `the tariff is valid for ${minutes} minutes; the regulator's rules need at least ${rules.minTariffMinutes}`,
    };
  const low = t.pricesPerMWh.findIndex((p) => p < rules.floorPerMWh);
  if (low >= 0)
    return {
      reason: 'TARIFF_BELOW_FLOOR',
      message: `the price from ${at(low)} is ${t.pricesPerMWh[low]} per MWh, below the regulator's floor of ${rules.floorPerMWh}; price every interval at least at the floor`,
    };
  let sum = 0n;
  let total = 0n;
  for (const s of preceding) {
    sum += BigInt(s.pricePerMWh) * BigInt(s.minutes);
    total += BigInt(s.minutes);
  }
  for (const p of t.pricesPerMWh) {
    sum += BigInt(p) * BigInt(t.intervalMinutes);
    total += BigInt(t.intervalMinutes);
  }
  // mean = sum / total; every price must lie in [mean / R, mean x R].
  const r = BigInt(rules.maxRatioToMean);
  const off = t.pricesPerMWh.findIndex((p) => {
    const pt = BigInt(p) * total;
    return pt > r * sum || r * pt < sum;
  });
  if (off >= 0)
    return {
      reason: 'TARIFF_PRICE_RATIO',
      message: `the price from ${at(off)} (${t.pricesPerMWh[off]} per MWh) is more than ${rules.maxRatioToMean}x away from the mean price (${sum / total} per MWh, over this tariff and the supplier's prices in the 30 days before it); keep every price within that factor of the mean`,
    };
  for (let i = 0; i < t.pricesPerMWh.length; ) {
    let j = i + 1;
    while (j < t.pricesPerMWh.length && t.pricesPerMWh[j] === t.pricesPerMWh[i]) j++;
    const run = (j - i) * t.intervalMinutes;
    if (run < rules.minBlockMinutes)
      return {
        reason: 'TARIFF_BLOCK_TOO_SHORT',
        message: `the price from ${at(i)} holds for ${run} minutes; the regulator's rules need every price to hold for at least ${rules.minBlockMinutes} minutes`,
      };
    i = j;
  }
  return undefined;
}
