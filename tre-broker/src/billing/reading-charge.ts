/**
 * What one reading costs when readings and tariffs have different granularities, exactly, in
 * integers. A reading of L minutes is split into L/15 parts of 15 minutes (the finest interval of
 * the protocol): each part gets floor(Wh / parts) Wh and the first (Wh mod parts) parts one Wh more,
 * so the parts sum to the reading. Each part is billed at the price in force at its own start. A
 * reading whose every part has a price is billed; otherwise it is not billed at all.
 */

export const PART_MS = 15 * 60_000;

/** The reading's Wh in 15-minute parts, earliest first (they sum to `wh`). */
export function splitEnergy(wh: number, minutes: number): number[] {
  const parts = Math.max(1, Math.round(minutes / 15));
  const base = Math.floor(wh / parts);
  const extra = wh - base * parts;
  return Array.from({ length: parts }, (_, i) => base + (i < extra ? 1 : 0));
}

/**
 * Micro-minor units for a reading of `wh` over [start, start + minutes), given the price (minor
 * units per MWh) in force at an instant; undefined when some part has no price.
 */
export function readingCharge(
  start: number,
  minutes: number,
  wh: number,
  priceAt: (t: number) => number | undefined,
): number | undefined {
  // splitEnergy's parts, without building the array (this runs for every reading billed).
  const parts = Math.max(1, Math.round(minutes / 15));
  const base = Math.floor(wh / parts);
  const extra = wh - base * parts;
  let micro = 0;
  for (let i = 0; i < parts; i++) {
    const price = priceAt(start + i * PART_MS);
    if (price === undefined) return undefined;
    micro += (base + (i < extra ? 1 : 0)) * price;
  }
  if (!Number.isSafeInteger(micro)) throw new RangeError(`reading charge ${micro} is not a safe integer`);
  return micro;
}
