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
import type { z } from 'zod';
import { type InboundMessage, type Refusal, refusal, refusalOf } from './message-router.js';

export type SignedRequest<T> = { ok: true; requestId: string; content: T } | { ok: false; refusal: Refusal };

/**
 * `signer` names the party the content claims to come from (e.g. a tariff's supplierId): it must be
 * the party on the connection, or the request is refused WRONG_SIGNER.
 */
export async function verifySignedRequest<S extends z.ZodType>(
  msg: InboundMessage,
  type: SignedType,
  schema: S,
  signer?: (content: z.infer<S>) => string,
): Promise<SignedRequest<z.infer<S>>> {
  const envelope = decodePayload(msg.payload, signedEnvelopeSchema);
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
    return { ok: true, requestId, content };
  } catch (err) {
    const e = err as SignatureError;
    const reason = e instanceof SignatureError && e.code !== 'MALFORMED' ? 'BAD_SIGNATURE' : 'MALFORMED';
    return { ok: false, refusal: refusal(requestId, reason, e.message) };
  }
}
