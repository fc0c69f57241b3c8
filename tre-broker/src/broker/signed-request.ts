/**
 * Requests that carry signed content (tariffs, DR events, the regulator's configuration): the
 * envelope is decoded and the JWS verified with the key of the sender's own certificate, so
 * content can only come from the party on the connection. Failures become refusal receipts.
 */
import {
  decodePayload,
  SignatureError,
  type SignedType,
  signedEnvelopeSchema,
  verifyContent,
} from '@tre/protocol';
import { z } from 'zod';
import { type InboundMessage, type Refusal, refusal, refusalOf } from './message-router.js';

/** The signed envelope of bulk content (DR acceptances): the JWS may be as large as the payload. */
const bulkSignedEnvelopeSchema = signedEnvelopeSchema.extend({ jws: z.string().min(1) });

export type SignedRequest<T> =
  | {
      ok: true;
      requestId: string;
      content: T;
      /** The compact JWS as received (e.g. kept as evidence). */
      jws: string;
    }
  | { ok: false; refusal: Refusal };

/**
 * `signer` names the party the content claims to come from (e.g. a tariff's supplierId): it must be
 * the party on the connection, or the request is refused WRONG_SIGNER. `maxBytes` (e.g.
 * MAX_BULK_PAYLOAD_BYTES) admits bulk content: a payload and a JWS up to that size.
 */
export async function verifySignedRequest<S extends z.ZodType>(
  msg: InboundMessage,
  type: SignedType,
  schema: S,
  signer?: (content: z.infer<S>) => string,
  maxBytes?: number,
): Promise<SignedRequest<z.infer<S>>> {
  const envelopeSchema = maxBytes === undefined ? signedEnvelopeSchema : bulkSignedEnvelopeSchema;
  const envelope = decodePayload(msg.payload, envelopeSchema, maxBytes);
  if (!envelope.ok) return { ok: false, refusal: refusalOf(envelope) };
  const requestId = envelope.value.requestId ?? 'unknown';
  try {
    const content = await verifyContent(type, envelope.value.jws, msg.from.publicKey, schema);
    if (signer && signer(content) !== msg.from.id) {
      return {
        ok: false,
        refusal: refusal(
          requestId,
          'WRONG_SIGNER',
          `the ${type} names another ${msg.from.role} than its signer`,
        ),
      };
    }
    return { ok: true, requestId, content, jws: envelope.value.jws };
  } catch (err) {
    const e = err as SignatureError;
    const reason = e instanceof SignatureError && e.code !== 'MALFORMED' ? 'BAD_SIGNATURE' : 'MALFORMED';
    return { ok: false, refusal: refusal(requestId, reason, e.message) };
  }
}
