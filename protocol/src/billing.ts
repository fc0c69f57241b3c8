/**
 * Payloads of the billing flow (paper III-B). Money is integer minor currency units; prices are
 * integer minor units per MWh, so energy (Wh) x price accumulates exactly in micro-minor units.
 */
import { z } from 'zod';
import {
  count,
  instant,
  intervalMinutes,
  partyId,
  pricePerMWh,
  requestId,
  safeInt,
  version,
} from './envelope.js';

export const currency = z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 currency code such as GBP or EUR');

/** Signed by the supplier (JWS payload); re-signed by the TRE for the broadcast. */
export const tariffSchema = z.strictObject({
  v: version,
  supplierId: partyId,
  tariffId: partyId,
  currency,
  validFrom: instant,
  validTo: instant,
  intervalMinutes,
  /** One price per interval from validFrom to validTo, minor units per MWh. */
  pricesPerMWh: z.array(pricePerMWh).min(1).max(10_000),
});
export type Tariff = z.infer<typeof tariffSchema>;

export const periodLengthSchema = z.strictObject({
  unit: z.enum(['day', 'month']),
  count: z.number().int().min(1).max(366),
});
export type PeriodLength = z.infer<typeof periodLengthSchema>;

/** supplier -> TRE on `supplier/{s}/billing-period`. */
export const billingPeriodRequestSchema = z.strictObject({
  v: version,
  requestId,
  startsAt: instant,
  length: periodLengthSchema,
});
export type BillingPeriodRequest = z.infer<typeof billingPeriodRequestSchema>;

/**
 * Signed by the TRE (JWS payload) on `supplier/{s}/statement`: only what billing needs, one total
 * and whether every minute of the period was billed from a reading (`complete`) or not
 * (`estimated`: some of it had no reading, an out-of-bounds one, or no tariff; the total bills what
 * was metered). Nothing finer: no counts of intervals.
 */
export const statementSchema = z.strictObject({
  v: version,
  statementId: partyId,
  supplierId: partyId,
  account: z.string().max(64),
  periodStart: instant,
  periodEnd: instant,
  currency,
  /** Energy charges minus demand-response credits, rounded half-to-even once, minor units. */
  totalMinor: safeInt,
  basis: z.enum(['complete', 'estimated']),
});
export type Statement = z.infer<typeof statementSchema>;

/**
 * The household's own copy (signed separately, on its `inbox/statement`): the supplier's statement
 * plus the counts only the household may see.
 */
export const householdStatementSchema = statementSchema.extend({
  /** Readings billed in this statement (of any length). */
  readingsBilled: count,
  /** Minutes of the period without a billed reading. */
  minutesMissing: count,
});
export type HouseholdStatement = z.infer<typeof householdStatementSchema>;

/** supplier -> TRE on `supplier/{s}/statement-ack`. */
export const statementAckSchema = z.strictObject({
  v: version,
  requestId,
  statementIds: z.array(partyId).min(1).max(100_000),
});
export type StatementAck = z.infer<typeof statementAckSchema>;

/** Signed by the TRE (JWS payload) on the household's `inbox/bill`: the running bill. */
export const billSchema = z.strictObject({
  v: version,
  meterId: partyId,
  periodStart: instant,
  currency,
  runningTotalMinor: safeInt,
  intervalsBilled: count,
  asOf: instant,
});
export type Bill = z.infer<typeof billSchema>;
