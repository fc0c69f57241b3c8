/**
 * Signed content is a compact JWS (ES256). The `typ` header names what is signed, so a signature
 * over one kind of content can never be replayed as another kind.
 */
import type { KeyObject } from 'node:crypto';
import { CompactSign, compactVerify } from 'jose';
import type { z } from 'zod';

export const SIGNED_TYPES = {
  tariff: 'tre-tariff+jws',
  drEvent: 'tre-dr-event+jws',
  drAcceptance: 'tre-dr-acceptance+jws',
  drCancel: 'tre-dr-cancel+jws',
  drModify: 'tre-dr-modify+jws',
  drAnnouncement: 'tre-dr-announcement+jws',
  regulatorConfig: 'tre-regulator-config+jws',
  statement: 'tre-statement+jws',
  householdStatement: 'tre-household-statement+jws',
  registryUpdate: 'tre-registry-update+jws',
  bill: 'tre-bill+jws',
  drOutcome: 'tre-dr-outcome+jws',
  attestationPolicy: 'tre-attestation-policy+jws',
} as const;
export type SignedType = keyof typeof SIGNED_TYPES;

export type SigningKey = KeyObject | CryptoKey;
export type VerifyingKey = KeyObject | CryptoKey;

export class SignatureError extends Error {
  override readonly name = 'SignatureError';
  constructor(
    readonly code: 'BAD_SIGNATURE' | 'WRONG_TYPE' | 'MALFORMED',
    message: string,
  ) {
    super(message);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function signContent(type: SignedType, payload: unknown, key: SigningKey): Promise<string> {
  return new CompactSign(encoder.encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'ES256', typ: SIGNED_TYPES[type] })
    .sign(key);
}

/**
 * Verifies signature and type, then parses the payload with `schema`.
 * Throws SignatureError (code BAD_SIGNATURE, WRONG_TYPE or MALFORMED).
 */
export async function verifyContent<S extends z.ZodType>(
  type: SignedType,
  jws: string,
  key: VerifyingKey,
  schema: S,
): Promise<z.infer<S>> {
  let verified: Awaited<ReturnType<typeof compactVerify>>;
  try {
    verified = await compactVerify(jws, key, { algorithms: ['ES256'] });
  } catch (err) {
    throw new SignatureError('BAD_SIGNATURE', `signature check failed: ${(err as Error).message}`);
  }
  if (verified.protectedHeader.typ !== SIGNED_TYPES[type]) {
    throw new SignatureError(
      'WRONG_TYPE',
      `expected signed ${type} (typ ${SIGNED_TYPES[type]}), got typ ${String(verified.protectedHeader.typ)}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(verified.payload));
  } catch {
    throw new SignatureError('MALFORMED', 'signed payload is not JSON');
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    throw new SignatureError('MALFORMED', `signed ${type} is malformed: ${describeIssues(parsed.error)}`);
  }
  return parsed.data;
}

/** One line per problem: `path: message`. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}
