/** Payloads of the monitoring flow (paper III-A) and the household registry. */
import { z } from 'zod';
import { count, instant, intervalMinutes, partyId, requestId, safeInt, version } from './envelope.js';

/** meter -> TRE on `meter/{m}/reading`. Idempotency key: (meter, intervalStart). */
export const readingSchema = z.strictObject({
  v: version,
  requestId,
  /** Start of the interval, aligned to `intervalMinutes` in UTC. */
  intervalStart: instant,
  intervalMinutes,
  /** Imported energy in the interval, Wh (the TRE recomputes it from registers where it can). */
  energyWh: safeInt,
  /** Cumulative import register at the end of the interval, Wh. */
  registerWh: safeInt,
  exportWh: safeInt.optional(),
  exportRegisterWh: safeInt.optional(),
  /** Set by the agent when the interval closes a gap (agent down, meter unplugged). */
  gap: z.boolean().optional(),
});
export type Reading = z.infer<typeof readingSchema>;

export const groupDefinitionSchema = z.strictObject({
  groupId: partyId,
  meters: z.array(partyId).min(1).max(100_000),
});

/** DNO -> TRE on `dno/{d}/groups`: aggregation groups over the DNO's own meters. */
export const groupsRequestSchema = z.strictObject({
  v: version,
  requestId,
  groups: z.array(groupDefinitionSchema).min(1).max(1_000),
});
export type GroupsRequest = z.infer<typeof groupsRequestSchema>;

/**
 * TRE -> DNO on `dno/{d}/aggregate/{g}`: one noisy total per group per interval, every interval,
 * always this shape. The total is over the members whose complete, in-bounds reading the TRE could
 * use (budget left); who that was, and how many, is not released (see the privacy contract).
 */
export const aggregateSchema = z.strictObject({
  v: version,
  groupId: partyId,
  intervalStart: instant,
  intervalMinutes,
  /** Total of the clamped readings used, plus discrete Laplace noise, Wh. */
  noisyTotalWh: safeInt,
  /** Privacy parameter of this release, e.g. `1/2`. */
  epsilon: z.string().regex(/^\d+\/\d+$/),
  /** Noise scale Delta/epsilon in Wh. */
  noiseScaleWh: z.number().nonnegative(),
  /** |noise| stays below this with probability 95 %. */
  bound95Wh: count,
});
export type Aggregate = z.infer<typeof aggregateSchema>;

export const householdSchema = z.strictObject({
  meterId: partyId,
  supplierId: partyId,
  dnoId: partyId,
  /** Installed capacity in W: the bound for the readings' sanity check and DP clamping. */
  capacityW: z.number().int().min(1).max(1_000_000),
  account: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
  /** The TRE shard the household lives in (a cluster of TREs, issue 21); absent for a single TRE. */
  shard: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, "a shard: a TRE id without '.'")
    .optional(),
});
export type Household = z.infer<typeof householdSchema>;
