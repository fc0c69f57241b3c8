/** Payloads of the demand-response flow (paper III-C): anonymous demand bidding. */
import { z } from 'zod';
import { instant, partyId, pricePerMWh, requestId, safeInt, version } from './envelope.js';

/** Signed by the DSM (JWS payload) on `dsm/{x}/event`; re-signed by the TRE for the broadcast. */
export const drEventSchema = z.strictObject({
  v: version,
  eventId: partyId,
  dsmId: partyId,
  windowStart: instant,
  windowEnd: instant,
  bidDeadline: instant,
  /**
   * The DSM's acceptance must arrive before this instant: after bidDeadline, no later than
   * windowStart (so households learn their outcome before the window). Later ones are refused.
   */
  acceptBy: instant,
  requestedReductionWh: z.number().int().min(1).max(1_000_000_000_000),
  priceCapPerMWh: pricePerMWh,
  targetGroup: z.strictObject({ dnoId: partyId, groupId: partyId }).optional(),
});
export type DrEvent = z.infer<typeof drEventSchema>;

/** TRE-signed broadcast of an open event on `broadcast/dr-event/{e}` (retained until expiresAt). */
export const drAnnouncementSchema = z.strictObject({
  v: version,
  event: drEventSchema,
  expiresAt: instant,
});
export type DrAnnouncement = z.infer<typeof drAnnouncementSchema>;

/** meter -> TRE on `meter/{m}/bid`. Idempotency key: bidId. */
export const bidSchema = z.strictObject({
  v: version,
  requestId,
  bidId: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
  eventId: partyId,
  quantityWh: safeInt,
  pricePerMWh: safeInt,
});
export type Bid = z.infer<typeof bidSchema>;

/** A random single-use pseudonym: 128 bits or more, base64url. */
export const pseudonym = z.string().regex(/^[A-Za-z0-9_-]{22,64}$/);

/** TRE -> DSM on `dsm/{x}/bids/{e}`: all pseudo-bids at once, in random order, nothing else. */
export const pseudoBidsSchema = z.strictObject({
  v: version,
  eventId: partyId,
  bids: z.array(z.strictObject({ pseudonym, quantityWh: safeInt, pricePerMWh: safeInt })),
});
export type PseudoBids = z.infer<typeof pseudoBidsSchema>;

/**
 * Signed by the DSM (JWS payload, typ `tre-dr-acceptance+jws`) inside the signed envelope on
 * `dsm/{x}/accept/{e}`: names the event (must be the topic's) and the DSM (must be the signer and
 * the event's owner). One per event, before the event's `acceptBy`.
 */
export const acceptanceSchema = z.strictObject({
  v: version,
  eventId: partyId,
  dsmId: partyId,
  accepted: z.array(pseudonym).max(1_000_000),
});
export type Acceptance = z.infer<typeof acceptanceSchema>;

/** TRE -> DSM on `dsm/{x}/compliance/{e}`: per pseudonym, delivered or not; never readings. */
export const complianceSchema = z.strictObject({
  v: version,
  eventId: partyId,
  results: z.array(z.strictObject({ pseudonym, delivered: z.boolean() })),
});
export type Compliance = z.infer<typeof complianceSchema>;

/** Signed by the TRE (JWS payload) on the household's `inbox/dr-outcome`. */
export const drOutcomeSchema = z.strictObject({
  v: version,
  eventId: partyId,
  bidId: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
  outcome: z.enum(['accepted', 'not-accepted', 'delivered', 'not-delivered']),
  /** Credit (negative ledger line) or its reversal, micro-minor units. */
  creditMicroMinor: safeInt.optional(),
});
export type DrOutcome = z.infer<typeof drOutcomeSchema>;
