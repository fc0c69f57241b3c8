/** The simulator's ground truth next to a released group total. */
import type { SimulatedHousehold } from './simulated-household.js';

/**
 * The true total of a group over one released interval: what its members sent for every one of
 * their intervals (`intervalMinutes` long) inside it.
 */
export function trueGroupTotalWh(
  members: readonly SimulatedHousehold[],
  release: { intervalStart: string; intervalMinutes: number },
  intervalMinutes: number,
): number {
  const start = Date.parse(release.intervalStart);
  let total = 0;
  for (const h of members)
    for (let t = start; t < start + release.intervalMinutes * 60_000; t += intervalMinutes * 60_000)
      total += h.sent.get(t) ?? 0;
  return total;
}
