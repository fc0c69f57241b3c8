/**
 * What crosses NATS between two TRE shards (issue 21), as pure functions over jose.
 *
 * A message is signed, then sealed: a JWS (ES256, typ `tre-shard-message+jws`) by the sender's TLS
 * key over `{ v, kind, from, to, iat, id, body }`, inside a compact JWE (`ECDH-ES+A256KW` /
 * `A256GCM`, `kid` = the recipient key's JWK thumbprint) to the receiving shard's attested
 * encryption key. Signing inside the encryption, with `to` signed, stops a recipient re-sealing a
 * message to a third shard as if the sender had sent it there; `from` is compared with the
 * subject's sender, so a message cannot be relayed onto another sender's subject. `iat` and `id`
 * let the receiver refuse old messages and know a resent one (shard-link.ts keeps the ids: a retry
 * is resealed with a fresh `iat` and the same `id`).
 *
 * The receiver's answer to a message (`signAnswer`, `readAnswer`) is a small JWS (ES256, typ
 * `tre-shard-answer+jws`) by its TLS key over `{ v, from, to, id?, status, reason? }`, in clear:
 * no body, only whether the message was handled. Signed so that NATS cannot tell a sender that a
 * message it dropped was handled; it can still replay an answer, which names its message's id.
 *
 * Sizes: NATS sees each message's length. The plaintext (the JWS) is padded with spaces to a
 * bucket before sealing (`paddedLength`: 1, 2, 4 ... 64 KiB, then whole multiples of 64 KiB),
 * so all small messages (partial sums, notices) look alike, and a large one (a registry update,
 * a demand-response bid batch) reveals only its order of magnitude, roughly how many households
 * or bids it carries within a factor of two. Which shard talks to which, when and how often is
 * visible in the subjects and timing; nothing here hides it.
 *
 * The key endorsement a shard's hello answer carries (`endorseKey`, `checkKeyEndorsement`,
 * `helloLeaf`) is here too: it is how a verifier knows the encryption key it seals to is the
 * attested TRE's (shard-link.ts explains the binding).
 */
import { createHash, type KeyObject, randomBytes } from 'node:crypto';
import {
  CompactEncrypt,
  CompactSign,
  calculateJwkThumbprint,
  compactDecrypt,
  compactVerify,
  decodeProtectedHeader,
  exportJWK,
  type JWK,
} from 'jose';
import { z } from 'zod';

export const SHARD_MESSAGE_TYP = 'tre-shard-message+jws';
export const SHARD_KEY_TYP = 'tre-shard-key+jws';
export const SHARD_ANSWER_TYP = 'tre-shard-answer+jws';
const KEY_MANAGEMENT = 'ECDH-ES+A256KW';
const CONTENT_ENCRYPTION = 'A256GCM';

/** Why a sealed message was refused; shard-link.ts counts refusals by it. */
export type RefusalReason =
  | 'malformed'
  | 'stale-key'
  | 'undecryptable'
  | 'wrong-recipient'
  | 'sender-mismatch'
  | 'unknown-sender'
  | 'bad-signature';

export class SealedEnvelopeError extends Error {
  override readonly name = 'SealedEnvelopeError';
  constructor(
    readonly code: RefusalReason,
    message: string,
  ) {
    super(message);
  }
}

const kindSchema = z
  .string()
  .max(64)
  .regex(/^[a-z0-9-]+(\.[a-z0-9-]+)+$/i, 'a kind is `family.name`');
const shardSchema = z.string().min(1).max(64);

const messageSchema = z.strictObject({
  v: z.literal(1),
  kind: kindSchema,
  from: shardSchema,
  to: shardSchema,
  /** When it was sealed, milliseconds since the epoch (the sender's clock). */
  iat: z.number().int().nonnegative(),
  /** 16 random bytes, base64url: the receiver remembers it to refuse a replay. */
  id: z.string().regex(/^[A-Za-z0-9_-]{22}$/),
  body: z.unknown(),
});

export interface SealOptions {
  kind: string;
  from: string;
  to: string;
  /** The sender's TLS key (ECDSA P-256): its certificate is the one the receiver attested. */
  signingKey: KeyObject;
  /** The receiver's attested encryption key (ECDH P-256, public). */
  recipientKey: KeyObject | JWK;
  /** Defaults: now, and 16 random bytes (`newMessageId`). */
  iat?: number;
  /**
   * The message's id. A sender resealing the same message for a retry (a fresh `iat`, perhaps a
   * new recipient key) passes the id of its first seal, so the receiver knows it for the same one.
   */
  id?: string;
}

export interface OpenOptions {
  /** This shard's encryption key (private). */
  decryptionKey: KeyObject;
  /** This shard's name: the message must be addressed to it. */
  to: string;
  /** The sender named by the NATS subject (`senderOf`): the signed `from` must be the same. */
  sender: string;
  /** The attested TLS public key of a shard, or undefined when it is not (yet) attested. */
  senderKey: (shard: string) => KeyObject | undefined;
}

export interface OpenedMessage {
  kind: string;
  from: string;
  body: unknown;
  id: string;
  iat: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const SPACE = 0x20;
const BLOCK = 64 * 1024;

/** The plaintext length a message of `n` bytes is padded to (see the module comment). */
export function paddedLength(n: number): number {
  if (n <= 1024) return 1024;
  if (n <= BLOCK) return 2 ** Math.ceil(Math.log2(n));
  return Math.ceil(n / BLOCK) * BLOCK;
}

export const newMessageId = (): string => randomBytes(16).toString('base64url');

/** The JWK thumbprint (RFC 7638, SHA-256, base64url) of a public key: the key's `kid`. */
export function keyId(key: KeyObject | JWK): Promise<string> {
  return calculateJwkThumbprint(key);
}

/** Seals `body` (JSON) from one shard to another: the compact JWE that goes on NATS. */
export async function seal(body: unknown, o: SealOptions): Promise<string> {
  if (!kindSchema.safeParse(o.kind).success)
    throw new TypeError(
      `message kind ${JSON.stringify(o.kind)} is not \`family.name\` (letters, digits, '-')`,
    );
  const jws = await new CompactSign(
    encoder.encode(
      JSON.stringify({
        v: 1,
        kind: o.kind,
        from: o.from,
        to: o.to,
        iat: o.iat ?? Date.now(),
        id: o.id ?? newMessageId(),
        body,
      }),
    ),
  )
    .setProtectedHeader({ alg: 'ES256', typ: SHARD_MESSAGE_TYP })
    .sign(o.signingKey);
  const signed = encoder.encode(jws);
  const plaintext = new Uint8Array(paddedLength(signed.length)).fill(SPACE);
  plaintext.set(signed);
  return new CompactEncrypt(plaintext)
    .setProtectedHeader({
      alg: KEY_MANAGEMENT,
      enc: CONTENT_ENCRYPTION,
      kid: await keyId(o.recipientKey),
      cty: SHARD_MESSAGE_TYP,
    })
    .encrypt(o.recipientKey);
}

/** The kid of this shard's own key, once per key object (every message is checked against it). */
const ownKeyIds = new WeakMap<KeyObject, Promise<string>>();
function ownKeyId(decryptionKey: KeyObject): Promise<string> {
  let kid = ownKeyIds.get(decryptionKey);
  if (!kid) {
    kid = exportJWK(decryptionKey).then(({ kty, crv, x, y }) => keyId({ kty, crv, x, y }));
    ownKeyIds.set(decryptionKey, kid);
  }
  return kid;
}

/**
 * Opens a sealed message, or throws SealedEnvelopeError naming why it is refused: `malformed`,
 * `stale-key` (sealed to another key of this shard: the sender has not re-attested it since it
 * restarted), `undecryptable`, `sender-mismatch` (the signed sender is not the subject's),
 * `wrong-recipient`, `unknown-sender` (no attested key for the sender), `bad-signature`.
 */
export async function open(jwe: string, o: OpenOptions): Promise<OpenedMessage> {
  const refuse = (code: RefusalReason, message: string): never => {
    throw new SealedEnvelopeError(code, message);
  };
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jwe);
  } catch {
    return refuse('malformed', 'not a compact JWE');
  }
  if (header.alg !== KEY_MANAGEMENT || header.enc !== CONTENT_ENCRYPTION || header.cty !== SHARD_MESSAGE_TYP)
    refuse('malformed', `not a sealed shard message (alg ${String(header.alg)}, enc ${String(header.enc)})`);
  if (header.kid !== (await ownKeyId(o.decryptionKey)))
    refuse(
      'stale-key',
      'sealed to another encryption key of this shard (the sender attested an earlier run)',
    );
  let plaintext: Uint8Array;
  try {
    ({ plaintext } = await compactDecrypt(jwe, o.decryptionKey, {
      keyManagementAlgorithms: [KEY_MANAGEMENT],
      contentEncryptionAlgorithms: [CONTENT_ENCRYPTION],
    }));
  } catch {
    return refuse('undecryptable', 'the message does not decrypt with this shard key (tampered or forged)');
  }
  let end = plaintext.length;
  while (end > 0 && plaintext[end - 1] === SPACE) end--;
  const jws = decoder.decode(plaintext.subarray(0, end));
  // The claims are read before the signature is checked only to name the refusal; nothing
  // unverified is returned.
  let claimed: z.infer<typeof messageSchema>;
  try {
    const parts = jws.split('.');
    if (parts.length !== 3) throw new Error('not a compact JWS');
    claimed = messageSchema.parse(JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')));
  } catch {
    return refuse('malformed', 'the sealed content is not a signed shard message');
  }
  if (claimed.from !== o.sender)
    refuse('sender-mismatch', `signed as from ${claimed.from} but published as from ${o.sender}`);
  if (claimed.to !== o.to) refuse('wrong-recipient', `addressed to ${claimed.to}, not to ${o.to}`);
  const key = o.senderKey(o.sender);
  if (!key) return refuse('unknown-sender', `shard ${o.sender} is not attested`);
  let verified: Awaited<ReturnType<typeof compactVerify>>;
  try {
    verified = await compactVerify(jws, key, { algorithms: ['ES256'] });
  } catch {
    return refuse('bad-signature', `the signature is not by the attested TLS key of ${o.sender}`);
  }
  if (verified.protectedHeader.typ !== SHARD_MESSAGE_TYP)
    refuse('malformed', `signed content of type ${String(verified.protectedHeader.typ)}`);
  const m = messageSchema.parse(JSON.parse(decoder.decode(verified.payload)));
  return { kind: m.kind, from: m.from, body: m.body, id: m.id, iat: m.iat };
}

/**
 * What a receiving shard answers a message with (shard-link.ts): `handled` (its handler ran),
 * `duplicate` (an id it handled before: not run again), `failed` (the handler threw; `reason` is
 * the error's code or name, never its message), `unavailable` (the handler could not commit,
 * STORAGE_UNAVAILABLE: the id is forgotten, a retry runs it), `refused` (`reason`: the link's
 * refusal, e.g. `stale-key`).
 */
export const answerSchema = z.strictObject({
  v: z.literal(1),
  /** The answering shard. */
  from: shardSchema,
  /** The shard that sent the message. */
  to: shardSchema,
  /** The message's id, when it was opened. */
  id: z
    .string()
    .regex(/^[A-Za-z0-9_-]{22}$/)
    .optional(),
  status: z.enum(['handled', 'duplicate', 'failed', 'unavailable', 'refused']),
  reason: z
    .string()
    .max(64)
    .regex(/^[A-Za-z0-9_.-]+$/)
    .optional(),
});
export type ShardAnswer = z.infer<typeof answerSchema>;

/** Signs an answer with the answering shard's TLS key (compact JWS, what goes back on NATS). */
export async function signAnswer(answer: ShardAnswer, signingKey: KeyObject): Promise<string> {
  return new CompactSign(encoder.encode(JSON.stringify(answerSchema.parse(answer))))
    .setProtectedHeader({ alg: 'ES256', typ: SHARD_ANSWER_TYP })
    .sign(signingKey);
}

/**
 * The answer in `jws` when it is signed by `tlsKey` (the answering peer's attested key), from
 * `from` to `to`; undefined when it is not (forged, from another run of the peer, malformed).
 */
export async function readAnswer(
  jws: string,
  o: { tlsKey: KeyObject; from: string; to: string },
): Promise<ShardAnswer | undefined> {
  try {
    const verified = await compactVerify(jws, o.tlsKey, { algorithms: ['ES256'] });
    if (verified.protectedHeader.typ !== SHARD_ANSWER_TYP) return undefined;
    const parsed = answerSchema.safeParse(JSON.parse(decoder.decode(verified.payload)));
    if (!parsed.success || parsed.data.from !== o.from || parsed.data.to !== o.to) return undefined;
    return parsed.data;
  } catch {
    return undefined;
  }
}

/**
 * The leaf a shard asks its TPM to quote for a hello: SHA-256(verifier's nonce || the encryption
 * key's thumbprint), so the evidence answers this verifier about this key.
 */
export function helloLeaf(nonce: Buffer, thumbprint: string): Buffer {
  return createHash('sha256').update(nonce).update(Buffer.from(thumbprint, 'base64url')).digest();
}

const endorsementSchema = z.strictObject({
  v: z.literal(1),
  shard: shardSchema,
  thumbprint: z.string(),
  nonce: z.string(),
});

/** The TLS key's signature over (shard, encryption key thumbprint, the verifier's nonce). */
export async function endorseKey(o: {
  shard: string;
  thumbprint: string;
  nonce: Buffer;
  signingKey: KeyObject;
}): Promise<string> {
  const payload = { v: 1, shard: o.shard, thumbprint: o.thumbprint, nonce: o.nonce.toString('base64url') };
  return new CompactSign(encoder.encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'ES256', typ: SHARD_KEY_TYP })
    .sign(o.signingKey);
}

/** Whether `jws` is the endorsement of exactly this key, shard and nonce by `tlsKey`; the reason if not. */
export async function checkKeyEndorsement(
  jws: string,
  o: { shard: string; thumbprint: string; nonce: Buffer; tlsKey: KeyObject },
): Promise<string | undefined> {
  let verified: Awaited<ReturnType<typeof compactVerify>>;
  try {
    verified = await compactVerify(jws, o.tlsKey, { algorithms: ['ES256'] });
  } catch {
    return 'the key signature is not by the TLS key of the attested certificate';
  }
  if (verified.protectedHeader.typ !== SHARD_KEY_TYP) return 'the key signature has another type';
  const parsed = endorsementSchema.safeParse(
    (() => {
      try {
        return JSON.parse(decoder.decode(verified.payload));
      } catch {
        return undefined;
      }
    })(),
  );
  if (!parsed.success) return 'the key signature does not parse';
  if (parsed.data.shard !== o.shard) return `the key signature names shard ${parsed.data.shard}`;
  if (parsed.data.thumbprint !== o.thumbprint) return 'the key signature is over another encryption key';
  if (parsed.data.nonce !== o.nonce.toString('base64url')) return 'the key signature is not for our nonce';
  return undefined;
}
