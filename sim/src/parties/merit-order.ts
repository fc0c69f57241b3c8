/**
 * Merit-order clearing of pseudonymous bids: cheapest price first (ties: larger quantity first,
 * then pseudonym, so the result is deterministic), all-or-nothing per bid, until the requested
 * reduction is met. A bid that would overshoot is still taken when it is the one that meets the
 * request (the DSM pays for at most one partial overshoot).
 */
export interface PseudoBid {
  pseudonym: string;
  quantityWh: number;
  pricePerMWh: number;
}

export function meritOrder(bids: readonly PseudoBid[], requestedWh: number): PseudoBid[] {
  const sorted = [...bids].sort(
    (a, b) =>
      a.pricePerMWh - b.pricePerMWh || b.quantityWh - a.quantityWh || a.pseudonym.localeCompare(b.pseudonym),
  );
  const chosen: PseudoBid[] = [];
  let total = 0;
  for (const bid of sorted) {
    if (total >= requestedWh) break;
    chosen.push(bid);
    total += bid.quantityWh;
  }
  return chosen;
}
