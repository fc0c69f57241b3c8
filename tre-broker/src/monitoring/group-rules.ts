/**
 * Which aggregation groups a DNO may define. The rule, checked against all of the DNO's groups
 * ever accepted (groups are immutable, so none can be redefined later):
 *   1. every group has at least `minSize` members (default 50; never below 2);
 *   2. every member is a meter registered with this DNO;
 *   3. for every pair of distinct groups A, B: |A \ B| is 0 or at least `minSize`, and so is
 *      |B \ A|. So the difference of two released totals always covers zero or at least `minSize`
 *      households, never a single one.
 * Not covered: differences of unions of three or more groups (A + B - C); nested or disjoint
 * designs (feeders within substations) are safe under rule 3, and the privacy budget bounds what
 * any combination of releases can reveal in any case.
 */
export const DEFAULT_MIN_GROUP_SIZE = 50;

export type GroupRefusal =
  | { reason: 'GROUP_TOO_SMALL'; message: string }
  | { reason: 'GROUP_ISOLATES_HOUSEHOLD'; message: string }
  | { reason: 'NOT_AUTHORIZED'; message: string }
  | { reason: 'MALFORMED'; message: string };

export function checkGroups(
  proposed: { groupId: string; meters: string[] }[],
  existing: { groupId: string; meters: string[] }[],
  dnoMeters: Set<string>,
  minSize: number,
): GroupRefusal | undefined {
  const min = Math.max(2, minSize);
  const ids = new Set(existing.map((g) => g.groupId));
  for (const g of proposed) {
    if (ids.has(g.groupId))
      return {
        reason: 'MALFORMED',
        message: `group ${g.groupId} already exists; groups cannot be redefined (define a new id)`,
      };
    ids.add(g.groupId);
    const members = new Set(g.meters);
    if (members.size !== g.meters.length)
      return { reason: 'MALFORMED', message: `group ${g.groupId} lists a meter twice` };
    if (members.size < min)
      return {
        reason: 'GROUP_TOO_SMALL',
        message: `group ${g.groupId} has ${members.size} meters; the minimum is ${min}`,
      };
    const foreign = g.meters.filter((m) => !dnoMeters.has(m)).length;
    if (foreign > 0)
      return {
        reason: 'NOT_AUTHORIZED',
        message: `group ${g.groupId} has ${foreign} meters not registered with this DNO`,
      };
  }
  const all = [...existing, ...proposed].map((g) => ({ id: g.groupId, set: new Set(g.meters) }));
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i]!;
      const b = all[j]!;
      if (i < existing.length && j < existing.length) continue; // accepted before
      for (const [x, y] of [
        [a, b],
        [b, a],
      ] as const) {
        let diff = 0;
        for (const m of x.set) if (!y.set.has(m)) diff++;
        if (diff > 0 && diff < min) {
          return {
            reason: 'GROUP_ISOLATES_HOUSEHOLD',
            message: `groups ${x.id} and ${y.id} differ by ${diff} meters; differences must be 0 or at least ${min}`,
          };
        }
      }
    }
  }
  return undefined;
}
