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

/** Signed by the regulator (JWS payload) on `regulator/{r}/config`. */
export const regulatorConfigSchema = z.strictObject({
  v: version,
  minBillingPeriod: periodLengthSchema,
  issuedAt: instant,
});
export type RegulatorConfig = z.infer<typeof regulatorConfigSchema>;

/** Signed by the TRE (JWS payload) on `supplier/{s}/statement` and the household's `inbox/statement`. */
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
  intervalsBilled: count,
  intervalsMissing: count,
});
export type Statement = z.infer<typeof statementSchema>;

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
