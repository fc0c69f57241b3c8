/** The simulator's ground truth next to a released group total. */
import type { SimulatedHousehold } from './simulated-household.js';

interface Release {
  intervalStart: string;
  intervalMinutes: number;
}

/** What one member sent for every one of its intervals (`intervalMinutes` long) inside the release. */
function memberWh(h: SimulatedHousehold, release: Release, intervalMinutes: number): number {
  const start = Date.parse(release.intervalStart);
  let wh = 0;
  for (let t = start; t < start + release.intervalMinutes * 60_000; t += intervalMinutes * 60_000)
    wh += h.sent.get(t) ?? 0;
  return wh;
}

/**
 * The true total of a group over one released interval: what its members sent for every one of
 * their intervals (`intervalMinutes` long) inside it.
 */
export function trueGroupTotalWh(
  members: readonly SimulatedHousehold[],
  release: Release,
  intervalMinutes: number,
): number {
  let total = 0;
  for (const h of members) total += memberWh(h, release, intervalMinutes);
  return total;
}

/**
 * The release's sensitivity Delta from what the DNO sees: noiseScaleWh = Delta / epsilon. It is
 * the contribution bound of the release (the regulator's, or the TRE's default), or the largest
 * capacity x interval of the group where that is lower.
 */
export function releaseDeltaWh(release: { noiseScaleWh: number; epsilon: string }): number {
  const [p, q] = release.epsilon.split('/').map(Number) as [number, number];
  return Math.round((release.noiseScaleWh * p) / q);
}

/**
 * The total the TRE noised: each member's energy in the release clamped to Delta (a member's
 * contribution is clamped to min(bound, its capacity x interval), and its readings never exceed
 * its capacity, so clamping to Delta gives the same). `trueGroupTotalWh` minus this is the
 * clamping bias, which the DNO does not see and the stated noise bound does not cover.
 */
export function clampedGroupTotalWh(
  members: readonly SimulatedHousehold[],
  release: Release & { noiseScaleWh: number; epsilon: string },
  intervalMinutes: number,
): number {
  const delta = releaseDeltaWh(release);
  let total = 0;
  for (const h of members) total += Math.min(memberWh(h, release, intervalMinutes), delta);
  return total;
}
