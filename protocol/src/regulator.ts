/**
 * What the regulator signs (JWS payloads on `regulator/{r}/config` and `regulator/{r}/registry`).
 * Each carries `issuedAt`: the TRE accepts one only when it is newer than the one in force, so an
 * older signed configuration or registry update can never be replayed over a newer one.
 */
import { z } from 'zod';
import { periodLengthSchema } from './billing.js';
import { instant, pricePerMWh, version } from './envelope.js';
import { householdSchema } from './monitoring.js';

const quarterHours = (max: number) =>
  z
    .number()
    .int()
    .min(15)
    .max(max)
    .refine((m) => m % 15 === 0, 'a multiple of 15 minutes');

/**
 * The shape every supplier tariff must have, so that one statement cannot weight any interval far
 * above the rest of its period (tre-broker/README.md, Billing, says what a statement can reveal).
 */
export const tariffRulesSchema = z.strictObject({
  /** Every price is at least this (minor units per MWh); positive, so no interval can be priced out. */
  floorPerMWh: pricePerMWh.min(1),
  /**
   * Every price lies within this factor of the reference mean: the duration-weighted mean price over
   * the tariff together with the supplier's prices in the 30 days before it.
   */
  maxRatioToMean: z.number().int().min(1).max(1_000),
  /** Every run of one constant price lasts at least this long (the tariff's edges end a run). */
  minBlockMinutes: quarterHours(24 * 60),
  /** A tariff is valid for at least this long. */
  minTariffMinutes: quarterHours(31 * 24 * 60),
});
export type TariffRules = z.infer<typeof tariffRulesSchema>;

/**
 * In force until the regulator signs others. They accept a 3-rate time-of-use tariff and a
 * half-hourly day-ahead-indexed tariff with a positive floor; they refuse a tariff at the floor (or
 * zero) everywhere but one interval, and one with one interval 50x the rest.
 */
export const DEFAULT_TARIFF_RULES: TariffRules = {
  floorPerMWh: 1_000,
  maxRatioToMean: 4,
  minBlockMinutes: 30,
  minTariffMinutes: 24 * 60,
};

/**
 * Signed by the regulator (JWS payload) on `regulator/{r}/config`; absent rules or bound mean the
 * TRE's defaults. A configuration replaces the one in force as a whole, from the TRE's next use of
 * it (the next tariff check, the next monitoring release).
 */
export const regulatorConfigSchema = z.strictObject({
  v: version,
  minBillingPeriod: periodLengthSchema,
  tariffRules: tariffRulesSchema.optional(),
  /**
   * The per-household contribution bound of the DNO releases, Wh per 30-minute interval (15-minute
   * releases use half): each household's contribution is clamped to [0, bound] (and to its
   * capacity x interval), and the bound is the release's sensitivity (noise scale bound/epsilon;
   * lower only where the group's largest capacity x interval is). It must come from public
   * statistics, never from the readings. Absent: the TRE's default, 5,500 Wh (tre-broker/README.md).
   */
  contributionBoundWh: z.number().int().min(1).max(500_000).optional(),
  issuedAt: instant,
});
export type RegulatorConfig = z.infer<typeof regulatorConfigSchema>;

/** Signed by the regulator (JWS payload) on `regulator/{r}/registry`: households added or updated. */
export const registryUpdateSchema = z.strictObject({
  v: version,
  households: z.array(householdSchema).min(1).max(100_000),
  issuedAt: instant,
});
export type RegistryUpdate = z.infer<typeof registryUpdateSchema>;
