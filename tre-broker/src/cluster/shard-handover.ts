/**
 * Handing a shard's key to a standby (issue 21): every TRE of a shard needs the shard's 32-byte key
 * to read and write its journal (shard-journal.ts). The first primary of a shard makes it; a standby
 * asks the primary on `tre.handover.<shard>` (only the shard's own TREs may use the subject), and
 * each attests the other first, with the checks the shard link uses (peer-verification.ts):
 *
 *   standby -> primary  { v, step: 'challenge' }
 *   primary -> standby  { v, nonce }                              (single use, 30 s)
 *   standby -> primary  { v, step: 'key', challenge, nonce, hello }   its hello for the primary's nonce
 *   primary -> standby  { v, status: 'ok', hello, key }           its hello for the standby's nonce, and
 *                                                                 the key sealed (sealed-envelope.ts) to
 *                                                                 the standby's attested encryption key
 *
 * The standby opens the key only with the TLS key of the primary it attested. Nothing here logs
 * the key; the standby keeps it in its own encrypted store (shard-key.ts), whose key is sealed to
 * its TPM.
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { type Clock, shardSubjects, systemClock } from '@tre/protocol';
import { exportJWK, type JWK } from 'jose';
import { z } from 'zod';
import type { Logger } from '../log.js';
import {
  type HelloIdentity,
  helloAnswerFor,
  helloAnswerSchema,
  type PeerTrust,
  PeerVerifier,
} from './peer-verification.js';
import { keyId, open, seal } from './sealed-envelope.js';
import { SHARD_KEY_BYTES } from './shard-journal.js';

const KIND = 'handover.key';
const CHALLENGE_MS = 30_000;
const nonceSchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
const requestSchema = z.discriminatedUnion('step', [
  z.strictObject({ v: z.literal(1), step: z.literal('challenge') }),
  z.strictObject({
    v: z.literal(1),
    step: z.literal('key'),
    challenge: nonceSchema,
    nonce: nonceSchema,
    hello: z.unknown(),
  }),
]);
const challengeSchema = z.strictObject({ v: z.literal(1), nonce: nonceSchema });
const answerSchema = z.discriminatedUnion('status', [
  z.strictObject({
    v: z.literal(1),
    status: z.literal('ok'),
    hello: z.unknown(),
    key: z.string().max(8_192),
  }),
  z.strictObject({ v: z.literal(1), status: z.literal('refused'), message: z.string().max(1_024) }),
]);
const keyBodySchema = z.strictObject({ shardKey: z.string().max(64) });

export class HandoverError extends Error {
  override readonly name = 'HandoverError';
  constructor(
    readonly code: 'PRIMARY_UNREACHABLE' | 'PRIMARY_UNTRUSTED' | 'REFUSED',
    message: string,
  ) {
    super(message);
  }
}

const decoder = new TextDecoder();
const json = (data: Uint8Array): unknown => {
  try {
    return JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
};

/** A fresh ECDH P-256 key pair and its public JWK and thumbprint (the encryption key of a hello). */
async function encryptionKey(): Promise<{ privateKey: KeyObject; jwk: JWK; kid: string }> {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = await exportJWK(publicKey);
  const jwk = { kty, crv, x, y };
  return { privateKey, jwk, kid: await keyId(jwk) };
}

export interface HandoverDeps {
  nats: NatsConnection;
  me: HelloIdentity;
  trust: PeerTrust;
  log: Logger;
  clock?: Clock;
}

/** The primary's side: answers standbys of its shard with the key, once each attested. Returns a stop. */
export async function serveShardKey(deps: HandoverDeps & { shardKey: Buffer }): Promise<() => void> {
  const { nats, me, log } = deps;
  const verifier = new PeerVerifier(deps.trust, deps.clock ?? systemClock);
  const own = await encryptionKey();
  const challenges = new Map<string, number>();
  const answer = async (msg: Msg): Promise<void> => {
    if (!msg.reply?.startsWith(`${shardSubjects.inboxPrefix(me.shard)}.`)) return;
    const request = requestSchema.safeParse(json(msg.data));
    if (!request.success) return;
    const now = performance.now();
    for (const [n, until] of challenges) if (until < now) challenges.delete(n);
    if (request.data.step === 'challenge') {
      const nonce = randomBytes(32).toString('base64url');
      challenges.set(nonce, now + CHALLENGE_MS);
      msg.respond(JSON.stringify({ v: 1, nonce }));
      return;
    }
    const { challenge, nonce, hello } = request.data;
    const refuse = (message: string) => {
      log.warn({ reason: message }, 'shard key handover refused');
      msg.respond(JSON.stringify({ v: 1, status: 'refused', message }));
    };
    if (!challenges.delete(challenge)) return refuse('unknown or expired challenge: ask for a new one');
    const parsed = helloAnswerSchema.safeParse(hello);
    if (!parsed.success || parsed.data.status !== 'ok') return refuse('the standby sent no valid hello');
    const verdict = await verifier.verify(me.shard, Buffer.from(challenge, 'base64url'), parsed.data);
    if ('check' in verdict) return refuse(`the standby is not trusted (${verdict.check}: ${verdict.reason})`);
    const [mine, key] = await Promise.all([
      helloAnswerFor(me, own, Buffer.from(nonce, 'base64url')),
      seal(
        { shardKey: deps.shardKey.toString('base64url') },
        {
          kind: KIND,
          from: me.shard,
          to: me.shard,
          signingKey: me.signingKey,
          recipientKey: verdict.encryptionKey,
        },
      ),
    ]);
    msg.respond(JSON.stringify({ v: 1, status: 'ok', hello: mine, key }));
    log.info({ shard: me.shard }, 'shard key handed to an attested standby');
  };
  const sub: Subscription = nats.subscribe(shardSubjects.handover(me.shard), {
    callback: (err, msg) => {
      if (err) return log.warn({ err: err.message }, 'handover subscription failed');
      answer(msg).catch((e: Error) => log.error({ err: e.message }, 'cannot answer a handover request'));
    },
  });
  await nats.flush();
  return () => sub.unsubscribe();
}

/** The standby's side: the shard key from the attested primary (rejects with why not). */
export async function requestShardKey(deps: HandoverDeps & { timeoutMs?: number }): Promise<Buffer> {
  const { nats, me } = deps;
  const timeout = deps.timeoutMs ?? 10_000;
  const subject = shardSubjects.handover(me.shard);
  const verifier = new PeerVerifier(deps.trust, deps.clock ?? systemClock);
  const ask = async (body: unknown): Promise<unknown> => {
    try {
      return json((await nats.request(subject, JSON.stringify(body), { timeout })).data);
    } catch (err) {
      throw new HandoverError(
        'PRIMARY_UNREACHABLE',
        `no primary of shard ${me.shard} answered on ${subject} (${(err as Error).message}): is the shard's primary running?`,
      );
    }
  };
  const challenge = challengeSchema.safeParse(await ask({ v: 1, step: 'challenge' }));
  if (!challenge.success) throw new HandoverError('PRIMARY_UNTRUSTED', 'the primary sent no valid challenge');
  const own = await encryptionKey();
  const nonce = randomBytes(32);
  const hello = await helloAnswerFor(me, own, Buffer.from(challenge.data.nonce, 'base64url'));
  const answer = answerSchema.safeParse(
    await ask({
      v: 1,
      step: 'key',
      challenge: challenge.data.nonce,
      nonce: nonce.toString('base64url'),
      hello,
    }),
  );
  if (!answer.success) throw new HandoverError('PRIMARY_UNTRUSTED', 'the primary sent no valid answer');
  if (answer.data.status === 'refused')
    throw new HandoverError('REFUSED', `the primary refused to hand over the key: ${answer.data.message}`);
  const theirs = helloAnswerSchema.safeParse(answer.data.hello);
  if (!theirs.success || theirs.data.status !== 'ok')
    throw new HandoverError('PRIMARY_UNTRUSTED', 'the primary sent no valid hello');
  const verdict = await verifier.verify(me.shard, nonce, theirs.data);
  if ('check' in verdict)
    throw new HandoverError(
      'PRIMARY_UNTRUSTED',
      `the primary is not trusted (${verdict.check}: ${verdict.reason}); no key taken`,
    );
  const opened = await open(answer.data.key, {
    decryptionKey: own.privateKey,
    to: me.shard,
    sender: me.shard,
    senderKey: (s) => (s === me.shard ? verdict.tlsKey : undefined),
  });
  const body = keyBodySchema.safeParse(opened.body);
  const key = body.success ? Buffer.from(body.data.shardKey, 'base64url') : Buffer.alloc(0);
  if (opened.kind !== KIND || key.length !== SHARD_KEY_BYTES)
    throw new HandoverError('PRIMARY_UNTRUSTED', 'the primary sealed no shard key');
  return key;
}
