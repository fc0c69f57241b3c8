/**
 * Attestation request/response (paper IV). The verifier publishes a fresh nonce on its own
 * `attest` topic; the TRE answers on the verifier's `inbox/attestation` with the same requestId.
 * Nonces that arrive together are leaves of one Merkle tree; a single TPM quote signs
 * qualifyingData = SHA-256(merkleRoot || SHA-256(TRE TLS public key SPKI DER)).
 */
import { z } from 'zod';
import { instant, partyId, requestId, version } from './envelope.js';

const base64 = z.string().regex(/^[A-Za-z0-9+/_-]*={0,2}$/);
const hex = z.string().regex(/^[0-9a-f]*$/);

export const attestationRequestSchema = z.strictObject({
  v: version,
  requestId,
  /** 16-64 random bytes, base64url. */
  nonce: z.string().regex(/^[A-Za-z0-9_-]{22,86}$/),
});
export type AttestationRequest = z.infer<typeof attestationRequestSchema>;

export const measurementEventSchema = z.strictObject({
  pcr: z.number().int().min(0).max(23),
  /** SHA-256 of what was measured, hex. */
  digest: hex.length(64),
  /** What was measured, e.g. `tre-broker bundle`, `node binary`, `config`. */
  description: z.string().max(256),
});
export type MeasurementEvent = z.infer<typeof measurementEventSchema>;

export const evidenceSchema = z.strictObject({
  /** TPMS_ATTEST bytes as returned by TPM2_Quote, base64. */
  attest: base64,
  /** ECDSA P-256 signature over `attest`, DER, base64. */
  signature: base64,
  pcrs: z.array(z.strictObject({ index: z.number().int().min(0).max(23), sha256: hex.length(64) })).max(24),
  eventLog: z.array(measurementEventSchema).max(4096),
  /** AK certificate issued by the regulator, PEM. */
  akCertificate: z.string().max(16_384),
  /** SHA-256 of the TRE's TLS public key (SPKI DER) that the quote is bound to, hex. */
  tlsKeyHash: hex.length(64),
  /** Inclusion proof of the nonce in the batch's Merkle tree (see merkle.ts). */
  batch: z.strictObject({
    root: hex.length(64),
    leafIndex: z.number().int().min(0),
    leafCount: z.number().int().min(1),
    siblings: z.array(hex.length(64)).max(64),
  }),
});
export type Evidence = z.infer<typeof evidenceSchema>;

export const attestationResponseSchema = z.strictObject({
  v: version,
  requestId,
  status: z.enum(['ok', 'unavailable']),
  evidence: evidenceSchema.optional(),
  message: z.string().max(512).optional(),
});
export type AttestationResponse = z.infer<typeof attestationResponseSchema>;

const sha256Hex = hex.length(64);

/** The regulator's whitelist (JWS payload, signed type `attestationPolicy`). */
export const attestationPolicySchema = z.strictObject({
  v: version,
  policyId: partyId,
  issuedAt: instant,
  /** PCRs that every quote must cover. */
  requiredPcrs: z.array(z.number().int().min(0).max(23)).min(1),
  /** Golden values: for a PCR listed here, the quoted value must be one of these. */
  pcrValues: z.record(z.string().regex(/^\d{1,2}$/), z.array(sha256Hex)),
  /** Golden event digests: every event in the measurement log must be one of these. */
  eventDigests: z.array(z.strictObject({ description: z.string().max(256), digest: sha256Hex })),
});
export type AttestationPolicy = z.infer<typeof attestationPolicySchema>;
