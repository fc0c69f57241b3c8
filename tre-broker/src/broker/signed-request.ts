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
import type { HandlerResult, InboundMessage } from './message-router.js';

export type SignedRequest<T> =
  | { ok: true; requestId: string; content: T }
  | { ok: false; refusal: HandlerResult };

export async function verifySignedRequest<S extends z.ZodType>(
  msg: InboundMessage,
  type: SignedType,
  schema: S,
): Promise<SignedRequest<z.infer<S>>> {
  const envelope = decodePayload(msg.payload, signedEnvelopeSchema);
  if (!envelope.ok)
    return {
      ok: false,
      refusal: {
        status: 'refused',
        requestId: envelope.requestId,
        reason: envelope.reason,
        message: envelope.message,
      },
    };
  const requestId = envelope.value.requestId ?? 'unknown';
  try {
    return {
      ok: true,
      requestId,
      content: await verifyContent(type, envelope.value.jws, msg.from.publicKey, schema),
    };
  } catch (err) {
    const e = err as SignatureError;
    const reason = e instanceof SignatureError && e.code !== 'MALFORMED' ? 'BAD_SIGNATURE' : 'MALFORMED';
    return { ok: false, refusal: { status: 'refused', requestId, reason, message: e.message } };
  }
}
