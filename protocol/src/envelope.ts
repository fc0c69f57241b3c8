/**
 * The envelope that replaces MQTT 5 features we cannot use (aedes speaks 3.1.1 only):
 * every request carries `v` and a `requestId`; the TRE answers on the sender's own
 * `inbox/receipt` with `accepted` or `refused` plus a machine-readable reason, written before the
 * request's QoS1 PUBACK. Readings are the exception for acceptance: an accepted reading (a
 * duplicate included) gets its PUBACK alone, so a PUBACK with no receipt before it means accepted.
 */
import { z } from 'zod';
import { ID_PATTERN } from './identity.js';
import { PROTOCOL_VERSION } from './version.js';

export const version = z.literal(PROTOCOL_VERSION);
export const requestId = z
  .string()
  .regex(/^[A-Za-z0-9._:-]{1,64}$/, 'requestId: 1-64 characters of A-Z a-z 0-9 . _ : -');
export const partyId = z
  .string()
  .regex(ID_PATTERN, 'an id: 1-64 characters of a-z 0-9 . _ - starting with a letter or digit');
/** An instant in UTC, ISO 8601 with `Z`, e.g. `2026-11-24T20:15:00Z` (fractional seconds allowed). */
export const instant = z.iso.datetime({ offset: false });
/** Integer in the JavaScript safe range; energy in Wh may be negative on the wire so the TRE can flag it. */
export const safeInt = z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER);
export const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** Prices are integer minor currency units per MWh (24.5 p/kWh = 24500). */
export const pricePerMWh = z.number().int().min(0).max(1_000_000_000);
export const intervalMinutes = z.union([z.literal(15), z.literal(30)]);

export const REFUSAL_REASONS = [
  'MALFORMED',
  'TOO_LARGE',
  'UNKNOWN_METER',
  'UNKNOWN_PARTY',
  'NOT_AUTHORIZED',
  'OUT_OF_BOUNDS',
  'CONFLICTING_DUPLICATE',
  'BAD_SIGNATURE',
  'WRONG_SIGNER',
  'REPLAYED',
  'TARIFF_OVERLAP',
  'TARIFF_RETROACTIVE',
  'TARIFF_BELOW_FLOOR',
  'TARIFF_PRICE_RATIO',
  'TARIFF_BLOCK_TOO_SHORT',
  'TARIFF_TOO_SHORT',
  'PERIOD_TOO_SHORT',
  'GROUP_TOO_SMALL',
  'GROUP_ISOLATES_HOUSEHOLD',
  'UNKNOWN_EVENT',
  'EVENT_INVALID',
  'BID_DEADLINE_PASSED',
  'ABOVE_PRICE_CAP',
  'ABOVE_SHEDDABLE',
  'UNKNOWN_PSEUDONYM',
  'ACCEPTANCE_DEADLINE_PASSED',
  'RATE_LIMITED',
  'STORAGE_UNAVAILABLE',
  'ATTESTATION_UNAVAILABLE',
  'INTERNAL',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export const receiptSchema = z.strictObject({
  v: version,
  /** Echo of the request's id; `unknown` when the request was too malformed to carry one. */
  requestId: z.string().max(64),
  /** Topic family the request was published on, e.g. `reading`. */
  family: z.string().max(32),
  status: z.enum(['accepted', 'refused']),
  reason: z.enum(REFUSAL_REASONS).optional(),
  /** Human-readable detail; never contains another party's data. */
  message: z.string().max(512).optional(),
  /** True when an identical request was already committed (acknowledged and ignored; readings: no receipt). */
  duplicate: z.boolean().optional(),
});
export type Receipt = z.infer<typeof receiptSchema>;

/** Signed content travels as a compact JWS (ES256) inside this envelope. */
export const signedEnvelopeSchema = z.strictObject({
  v: version,
  requestId: requestId.optional(),
  jws: z
    .string()
    .min(1)
    .max(512 * 1024),
});
export type SignedEnvelope = z.infer<typeof signedEnvelopeSchema>;

/** Largest payload the TRE reads; anything bigger is refused with TOO_LARGE. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
/** For the bulk lists (registry, groups, acceptances of up to 100,000 bids). */
export const MAX_BULK_PAYLOAD_BYTES = 8 * 1024 * 1024;

export type Decoded<T> =
  | { ok: true; value: T }
  | { ok: false; reason: 'MALFORMED' | 'TOO_LARGE'; message: string; requestId: string };

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes an MQTT payload: size limit, strict UTF-8, JSON, then the schema. Never throws.
 * On failure it still tries to recover the requestId so the refusal receipt can echo it.
 */
export function decodePayload<S extends z.ZodType>(
  payload: Uint8Array,
  schema: S,
  maxBytes = MAX_PAYLOAD_BYTES,
): Decoded<z.infer<S>> {
  if (payload.byteLength > maxBytes) {
    return {
      ok: false,
      reason: 'TOO_LARGE',
      message: `payload over ${maxBytes} bytes`,
      requestId: 'unknown',
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(strictUtf8.decode(payload));
  } catch {
    return { ok: false, reason: 'MALFORMED', message: 'payload is not UTF-8 JSON', requestId: 'unknown' };
  }
  const parsed = schema.safeParse(json);
  if (parsed.success) return { ok: true, value: parsed.data };
  const id = (json as { requestId?: unknown } | null)?.requestId;
  return {
    ok: false,
    reason: 'MALFORMED',
    message: parsed.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
      .join('; ')
      .slice(0, 500),
    requestId: typeof id === 'string' && requestId.safeParse(id).success ? id : 'unknown',
  };
}
