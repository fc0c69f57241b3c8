/**
 * The sealed link between TRE shards over NATS (issue 21): the messaging half of ShardCluster
 * (`send`, `on`). NATS is outside the trust boundary: it sees subjects, sizes and ciphertext.
 *
 * Hello. On `start` the shard makes a fresh ECDH P-256 key pair, its encryption key, held in memory
 * only (it dies with the process), and answers requests on `hello(shard)`: a verifier sends a
 * 32-byte nonce, the answer is `{ shard, certificate, encryptionKey (JWK), keySignature, evidence }`.
 * The hello carries public material only (certificate, public key, evidence whose log names the
 * whitelisted release), what any party attesting over MQTT sees.
 *
 * Binding the encryption key. The quote binds the TLS key (its hash is in the qualifying data and
 * the verifier checks it against the certificate) and the Merkle leaf is
 * SHA-256(nonce || JWK thumbprint), so evidence answers this verifier about this key. The leaf
 * alone does not bind the key: the batch is shared with MQTT requesters, and anyone holding a
 * client certificate may have any 32 bytes quoted, e.g. the leaf of its own key. What binds it is
 * `keySignature`, a JWS by the TLS key over (shard, thumbprint, the verifier's nonce): the TLS key
 * is sealed to the TRE's measurement, so only the attested code holds it, and an attacker
 * replaying or relaying someone's evidence cannot sign its own key in. The verifier checks: the
 * certificate chains to the regulator root, is valid, is a TRE certificate naming exactly
 * `urn:tre:tre:<peer>`, is not on the regulator's CRL; `verifyAttestation` over the leaf with that
 * certificate; the key signature.
 *
 * Sending. Before the first message to a peer, the link attests it (timeout, retries with backoff,
 * an error naming the peer); an untrusted peer is sent nothing (`send` rejects with the check that
 * failed) and is asked again at most once per `cooldownMs`. Messages are sealed (sealed-envelope.ts).
 * Sending to this shard's own name runs its handler in process, on a JSON copy of the body.
 *
 * Receiving. Each message on `messagesTo(shard)`: its subject's sender is attested first (it may
 * have restarted), then the message is opened (refused: not for us, unattested sender, bad
 * signature, `from` differing from the subject's sender, older than `maxAgeMs`, replayed id) and
 * passed to its kind's handler, one sender's messages in order. Refusals and handler failures are
 * logged at warn and counted, never thrown; no log line carries a body (household data).
 *
 * Re-attestation, kept simple: an attestation older than `reattestMs` (1 h) is renewed before the
 * next message to or from that peer (lazily, no timer). A message whose signature fails with a
 * peer's cached TLS key makes the link re-attest that peer (at most once per `cooldownMs`) and try
 * once more. A restarted peer has a new encryption key, so what others still seal to its old key
 * cannot be read: it refuses that (`stale-key`) and answers the sender with a `link.rekey` notice
 * (signed and sealed like any message, at most once per `cooldownMs`), and the sender drops the
 * old key, so its next message re-attests the peer. What was sealed to the old key after the
 * restart is lost, like what was sent while the peer was down (NATS core keeps nothing); flows
 * already live with a shard that restarts. Both ends count and log it.
 *
 * Times (certificate validity, `iat`, ages) follow `clock`; every shard must run on the same time
 * source. Request timeouts and retry backoff are transport waits in real time.
 */
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { type Clock, checkShard, type Evidence, senderOf, shardSubjects, systemClock } from '@tre/protocol';
import { decodeProtectedHeader, exportJWK, type JWK } from 'jose';
import { z } from 'zod';
import type { Logger } from '../log.js';
import {
  type HelloAnswer,
  helloAnswerFor,
  helloAnswerSchema,
  type PeerCheck,
  type PeerTrust,
  PeerVerifier,
  type VerifiedPeer,
} from './peer-verification.js';
import {
  keyId,
  type OpenedMessage,
  open,
  type RefusalReason,
  SealedEnvelopeError,
  seal,
} from './sealed-envelope.js';
import type { ShardMessageHandler, ShardMessageKind } from './shard-cluster.js';

/** Every default in one place. */
export const SHARD_LINK_DEFAULTS = {
  /** How long one hello request waits for its answer. */
  attestTimeoutMs: 5_000,
  /** Hello requests before a peer is reported unreachable; waits between them double from `attestBackoffMs`. */
  attestAttempts: 4,
  attestBackoffMs: 250,
  /** How old a peer's attestation may be before it is renewed. */
  reattestMs: 60 * 60_000,
  /** Messages sealed longer ago (or further ahead) than this are refused; ids are kept as long. */
  maxAgeMs: 5 * 60_000,
  /** At most one forced re-attestation, one rekey notice and one retry of an untrusted peer per peer per this. */
  cooldownMs: 10_000,
};

export interface ShardLinkOptions extends Partial<typeof SHARD_LINK_DEFAULTS> {
  /** Connected by the caller with `inboxPrefix: shardSubjects.inboxPrefix(shard)`; the caller closes it. */
  nats: NatsConnection;
  shard: string;
  /** This TRE's certificate (PEM): what peers attest, with its key bound into every quote. */
  treCertificate: string;
  /** This TRE's TLS key (ECDSA P-256): signs every message and the encryption key. */
  signingKey: KeyObject;
  /** This TRE's evidence over a nonce (`AttestationService.evidence`). */
  evidence: (nonce: Buffer) => Promise<Evidence>;
  trust: PeerTrust;
  log: Logger;
  clock?: Clock;
  /** The cluster's shards (`tre start --shards`): when given, no other name is attested, sent to or heard. */
  roster?: readonly string[];
}

export type { PeerCheck };

export class ShardLinkError extends Error {
  override readonly name = 'ShardLinkError';
  constructor(
    readonly code:
      | 'NOT_STARTED'
      | 'NOT_IN_ROSTER'
      | 'PEER_UNREACHABLE'
      | 'PEER_UNTRUSTED'
      | 'NO_HANDLER'
      | 'HANDLER_EXISTS',
    message: string,
    readonly peer?: string,
    readonly check?: PeerCheck,
  ) {
    super(message);
  }
}

/** Why the link refused a message: the envelope's reasons and the link's own. */
export type LinkRefusal = RefusalReason | 'unattested-sender' | 'stale' | 'replayed' | 'no-handler';
const LINK_REFUSALS: readonly LinkRefusal[] = [
  'malformed',
  'stale-key',
  'undecryptable',
  'wrong-recipient',
  'sender-mismatch',
  'unknown-sender',
  'bad-signature',
  'unattested-sender',
  'stale',
  'replayed',
  'no-handler',
];

/** The link's own kind: "what you sealed to my key `kid` I could not read; attest me again". */
const REKEY = 'link.rekey';
const rekeySchema = z.strictObject({ kid: z.string().max(64) });

const helloRequestSchema = z.strictObject({
  v: z.literal(1),
  nonce: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
});

/** What the link holds of an attested peer. */
type Peer = VerifiedPeer;

const decoder = new TextDecoder();

/** What a peer that failed a check needs, for the error `send` rejects with. */
function hintFor(check: PeerCheck): string {
  switch (check) {
    case 'certificate':
    case 'revoked':
    case 'ak-certificate':
      return 'it needs a valid, unrevoked TRE certificate and AK certificate from the regulator naming it (`tre pki sign-csr --role tre`, `tre pki endorse-ak`)';
    case 'whitelist':
    case 'event-log':
    case 'pcr-digest':
      return "its release, configuration or boot is not on the regulator's whitelist (`tre attest-policy`); `tre measure` on it lists what it runs";
    case 'response':
    case 'encryption-key':
    case 'key-signature':
    case 'signature':
    case 'attest':
    case 'quote-data':
    case 'nonce':
    case 'tls-binding':
      return 'its answer is not that of an attested TRE (something on the NATS path may be impersonating it)';
  }
}

export class ShardLink {
  readonly stats = {
    sent: 0,
    received: 0,
    /** Sent to this shard itself (in process). */
    local: 0,
    /** `link.rekey` notices received: a peer restarted and could not read what we sealed to its old key. */
    rekeys: 0,
    refused: Object.fromEntries(LINK_REFUSALS.map((r) => [r, 0])) as Record<LinkRefusal, number>,
    handlerErrors: 0,
    attestations: { trusted: 0, untrusted: 0, unreachable: 0 },
    helloAnswered: 0,
  };
  private readonly o: typeof SHARD_LINK_DEFAULTS & ShardLinkOptions & { clock: Clock };
  private state: 'new' | 'started' | 'stopped' = 'new';
  private own: { privateKey: KeyObject; jwk: JWK; kid: string } | undefined;
  private subscriptions: Subscription[] = [];
  private readonly handlers = new Map<string, ShardMessageHandler>();
  private readonly peers = new Map<string, Peer>();
  private readonly attesting = new Map<string, Promise<Peer>>();
  private readonly untrusted = new Map<string, { error: ShardLinkError; until: number }>();
  /** When each peer last had a forced re-attestation, and last got a rekey notice from us. */
  private readonly forcedAt = new Map<string, number>();
  private readonly rekeyedAt = new Map<string, number>();
  /** Ids opened, with when they may be forgotten (their `iat` + maxAgeMs). */
  private readonly seen = new Map<string, number>();
  /** One chain per sender: its messages are handled in order. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly tasks = new Set<Promise<unknown>>();
  /** Sends between `send` and NATS taking the sealed message. */
  private sending = 0;
  private readonly verifier: PeerVerifier;

  constructor(opts: ShardLinkOptions) {
    this.o = { ...SHARD_LINK_DEFAULTS, ...opts, clock: opts.clock ?? systemClock };
    this.verifier = new PeerVerifier(this.o.trust, this.o.clock);
  }

  get shard(): string {
    return this.o.shard;
  }

  /** Makes this run's encryption key and answers hello requests and messages from now on. */
  async start(): Promise<void> {
    if (this.state !== 'new')
      throw new ShardLinkError('NOT_STARTED', 'a ShardLink starts once; make a new one');
    checkShard(this.o.shard);
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const { kty, crv, x, y } = await exportJWK(publicKey);
    const jwk = { kty, crv, x, y };
    this.own = { privateKey, jwk, kid: await keyId(jwk) };
    this.state = 'started';
    const { nats, shard } = this.o;
    this.subscriptions = [
      nats.subscribe(shardSubjects.hello(shard), { callback: (err, msg) => this.onHello(err, msg) }),
      nats.subscribe(shardSubjects.messagesTo(shard), { callback: (err, msg) => this.onMessage(err, msg) }),
    ];
    await nats.flush(); // the server has both subscriptions before anyone is told we are up
    this.o.log.info({ shard }, 'shard link started (sealed messages over NATS)');
  }

  /** Stops answering and receiving, waits for what is in hand, and forgets the encryption key. */
  async stop(): Promise<void> {
    if (this.state !== 'started') return;
    this.state = 'stopped';
    for (const s of this.subscriptions) s.unsubscribe();
    this.subscriptions = [];
    await Promise.allSettled([...this.chains.values(), ...this.tasks, ...this.attesting.values()]);
    this.own = undefined;
    this.peers.clear();
    this.seen.clear();
  }

  on(kind: ShardMessageKind, handler: ShardMessageHandler): void {
    if (kind === REKEY) throw new ShardLinkError('HANDLER_EXISTS', `${REKEY} is the link's own kind`);
    if (this.handlers.has(kind))
      throw new ShardLinkError('HANDLER_EXISTS', `a handler for ${kind} is already registered`);
    this.handlers.set(kind, handler);
  }

  /** Seals `body` to `to` and hands it to NATS (resolves once NATS took it, not once it was handled). */
  async send(to: string, kind: ShardMessageKind, body: unknown): Promise<void> {
    this.assertStarted();
    if (to === this.o.shard) return this.deliverLocally(kind, body);
    this.assertInRoster(to);
    this.sending++;
    try {
      const peer = await this.peer(to);
      const jwe = await seal(body, {
        kind,
        from: this.o.shard,
        to,
        signingKey: this.o.signingKey,
        recipientKey: peer.encryptionKey,
        iat: this.o.clock.now(),
      });
      this.o.nats.publish(shardSubjects.message(to, this.o.shard), jwe);
      this.stats.sent++;
    } finally {
      this.sending--;
    }
  }

  /**
   * Work in hand: sends not yet given to NATS (attesting the peer, sealing) and received messages
   * not yet handled. 0 when this link is idle (what is on its way through NATS is not counted).
   */
  get busy(): number {
    return this.sending + this.chains.size;
  }

  private assertStarted(): void {
    if (this.state !== 'started')
      throw new ShardLinkError(
        'NOT_STARTED',
        `the shard link of ${this.o.shard} is not running (start it first)`,
      );
  }

  private assertInRoster(shard: string): void {
    if (this.o.roster && !this.o.roster.includes(shard))
      throw new ShardLinkError(
        'NOT_IN_ROSTER',
        `shard ${shard} is not in this cluster's roster (${this.o.roster.join(', ')}); add it to --shards on every shard`,
        shard,
      );
  }

  private deliverLocally(kind: string, body: unknown): void {
    const handler = this.handlers.get(kind);
    if (!handler) throw new ShardLinkError('NO_HANDLER', `shard ${this.o.shard} has no handler for ${kind}`);
    const copy = body === undefined ? undefined : JSON.parse(JSON.stringify(body));
    this.stats.local++;
    this.inOrder(this.o.shard, () => this.dispatch(handler, this.o.shard, kind, copy));
  }

  // --- attesting peers -------------------------------------------------------------------------

  /** The attested keys of a peer: cached, or attested now (one attestation at a time per peer). */
  private async peer(shard: string, force = false): Promise<Peer> {
    const now = this.o.clock.now();
    const known = this.peers.get(shard);
    if (known && !force && now - known.attestedAt < this.o.reattestMs) return known;
    const refused = this.untrusted.get(shard);
    if (refused && now < refused.until) throw refused.error;
    let pending = this.attesting.get(shard);
    if (!pending) {
      pending = this.attest(shard).finally(() => this.attesting.delete(shard));
      this.attesting.set(shard, pending);
    }
    return pending;
  }

  private async attest(peer: string): Promise<Peer> {
    this.peers.delete(peer); // until it is attested again, nothing is sealed to what it had
    const subject = shardSubjects.hello(peer);
    let problem = '';
    for (let attempt = 0; attempt < this.o.attestAttempts; attempt++) {
      if (attempt > 0) await sleep(this.o.attestBackoffMs * 2 ** (attempt - 1));
      this.assertStarted();
      const nonce = randomBytes(32);
      let reply: Msg;
      try {
        reply = await this.o.nats.request(
          subject,
          JSON.stringify({ v: 1, nonce: nonce.toString('base64url') }),
          { timeout: this.o.attestTimeoutMs },
        );
      } catch (err) {
        problem = (err as Error).message;
        continue;
      }
      const parsed = helloAnswerSchema.safeParse(parseJson(reply.data));
      if (!parsed.success) return this.untrustedPeer(peer, 'response', 'its hello answer is malformed');
      const answer = parsed.data;
      if (answer.status === 'unavailable') {
        problem = `it reports attestation unavailable (${answer.message})`;
        continue;
      }
      const verdict = await this.verifier.verify(peer, nonce, answer);
      if ('check' in verdict) return this.untrustedPeer(peer, verdict.check, verdict.reason);
      this.peers.set(peer, verdict);
      this.untrusted.delete(peer);
      this.stats.attestations.trusted++;
      this.o.log.info({ peer }, 'shard attested');
      return verdict;
    }
    this.stats.attestations.unreachable++;
    this.o.log.warn(
      { peer, attempts: this.o.attestAttempts, err: problem },
      'shard did not answer attestation',
    );
    throw new ShardLinkError(
      'PEER_UNREACHABLE',
      `shard ${peer} did not answer its attestation request on ${subject} (${this.o.attestAttempts} attempts; last: ${problem}): is it running and connected to NATS? Nothing was sent to it`,
      peer,
    );
  }

  private untrustedPeer(peer: string, check: PeerCheck, reason: string): never {
    this.stats.attestations.untrusted++;
    const error = new ShardLinkError(
      'PEER_UNTRUSTED',
      `shard ${peer} is not trusted (${check}: ${reason}), so nothing is sent to it or accepted from it: ${hintFor(check)}`,
      peer,
      check,
    );
    this.untrusted.set(peer, { error, until: this.o.clock.now() + this.o.cooldownMs });
    this.o.log.warn({ peer, check, reason }, 'shard not trusted');
    throw error;
  }

  // --- answering hello -------------------------------------------------------------------------

  private onHello(err: Error | null, msg: Msg): void {
    if (err) {
      this.o.log.warn({ err: err.message }, 'hello subscription failed');
      return;
    }
    this.track(this.answerHello(msg));
  }

  private async answerHello(msg: Msg): Promise<void> {
    const own = this.own;
    const request = helloRequestSchema.safeParse(parseJson(msg.data));
    // Answers go to a requester's inbox only: with `allow_responses` the requester names the reply
    // subject, and one naming another shard's message subject would make this answer land there.
    if (!msg.reply?.startsWith('_INBOX.') || !own || !request.success) return; // nothing to answer, or not a hello
    const nonce = Buffer.from(request.data.nonce, 'base64url');
    const { shard, treCertificate: certificate, signingKey, evidence } = this.o;
    let answer: HelloAnswer;
    try {
      answer = await helloAnswerFor({ shard, certificate, signingKey, evidence }, own, nonce);
    } catch (err) {
      this.o.log.error({ err: (err as Error).message }, 'cannot answer a hello: no evidence');
      answer = {
        v: 1,
        status: 'unavailable',
        shard,
        message: 'this shard cannot reach its TPM; retry later',
      };
    }
    if (this.state !== 'started') return;
    msg.respond(JSON.stringify(answer));
    this.stats.helloAnswered++;
  }

  // --- receiving -------------------------------------------------------------------------------

  private onMessage(err: Error | null, msg: Msg): void {
    if (err) {
      this.o.log.warn({ err: err.message }, 'shard message subscription failed');
      return;
    }
    const from = senderOf(msg.subject) ?? '';
    const jwe = decoder.decode(msg.data);
    this.inOrder(from, () => this.receive(from, jwe));
  }

  /** Runs `task` after the sender's earlier messages; what it throws is logged, never rethrown. */
  private inOrder(from: string, task: () => Promise<void>): void {
    const next = (this.chains.get(from) ?? Promise.resolve())
      .then(task)
      .catch((err: Error) => this.o.log.error({ from, err: err.message }, 'shard message handling failed'))
      .finally(() => {
        if (this.chains.get(from) === next) this.chains.delete(from);
      });
    this.chains.set(from, next);
  }

  private refuse(from: string, reason: LinkRefusal, why: string): void {
    this.stats.refused[reason]++;
    this.o.log.warn({ from, reason, why }, 'shard message refused');
  }

  private async receive(from: string, jwe: string): Promise<void> {
    if (this.state !== 'started') return;
    if (!isShardName(from)) return this.refuse(from, 'malformed', 'not a shard message subject');
    if (from === this.o.shard)
      return this.refuse(
        from,
        'sender-mismatch',
        'published as from this shard, which sends itself nothing over NATS',
      );
    if (this.o.roster && !this.o.roster.includes(from))
      return this.refuse(from, 'unknown-sender', 'the sender is not in the roster');
    let peer: Peer;
    try {
      peer = await this.peer(from);
    } catch (err) {
      return this.refuse(from, 'unattested-sender', (err as Error).message);
    }
    let opened: OpenedMessage;
    try {
      opened = await this.openFrom(from, jwe, peer);
    } catch (err) {
      if (!(err instanceof SealedEnvelopeError)) {
        return this.refuse(from, 'unattested-sender', (err as Error).message);
      }
      if (err.code === 'stale-key') this.askToRekey(from, jwe);
      return this.refuse(from, err.code, err.message);
    }
    const now = this.o.clock.now();
    if (Math.abs(now - opened.iat) > this.o.maxAgeMs)
      return this.refuse(from, 'stale', `sealed ${Math.round((now - opened.iat) / 1000)} s ago`);
    if (this.seen.has(opened.id))
      return this.refuse(from, 'replayed', `message ${opened.id} was seen before`);
    this.remember(opened.id, opened.iat + this.o.maxAgeMs, now);
    if (opened.kind === REKEY) return this.rekeyed(from, opened.body);
    const handler = this.handlers.get(opened.kind);
    if (!handler) return this.refuse(from, 'no-handler', `no handler for ${opened.kind}`);
    this.stats.received++;
    await this.dispatch(handler, from, opened.kind, opened.body, opened.id);
  }

  /** Opens with the peer's cached key; a bad signature re-attests it (rate-limited) and tries once more. */
  private async openFrom(from: string, jwe: string, peer: Peer): Promise<OpenedMessage> {
    const own = this.own!;
    const attempt = (p: Peer) =>
      open(jwe, {
        decryptionKey: own.privateKey,
        to: this.o.shard,
        sender: from,
        senderKey: (s) => (s === from ? p.tlsKey : undefined),
      });
    try {
      return await attempt(peer);
    } catch (err) {
      if (!(err instanceof SealedEnvelopeError) || err.code !== 'bad-signature') throw err;
      if (!this.cooledDown(this.forcedAt, from)) throw err;
      this.o.log.info({ peer: from }, 'a message failed its signature check: attesting the sender again');
      return attempt(await this.peer(from, true));
    }
  }

  private async dispatch(
    handler: ShardMessageHandler,
    from: string,
    kind: string,
    body: unknown,
    id?: string,
  ): Promise<void> {
    try {
      await handler(from, body);
    } catch (err) {
      this.stats.handlerErrors++;
      // The error's message may quote the body: only its name and code are logged.
      const { name, code } = err as { name?: string; code?: unknown };
      this.o.log.warn({ from, kind, id, error: name, code }, 'shard message handler failed');
    }
  }

  private remember(id: string, forgetAt: number, now: number): void {
    this.seen.set(id, forgetAt);
    for (const [old, at] of this.seen) {
      if (at > now) break; // roughly in arrival order: the rest is newer
      this.seen.delete(old);
    }
  }

  /** True (and noted) when `peer` had nothing from `table` within the cooldown. */
  private cooledDown(table: Map<string, number>, peer: string): boolean {
    const now = this.o.clock.now();
    const last = table.get(peer);
    if (last !== undefined && now - last < this.o.cooldownMs) return false;
    table.set(peer, now);
    return true;
  }

  /** The sender sealed to an earlier key of ours: tell it (signed and sealed) to attest us again. */
  private askToRekey(from: string, jwe: string): void {
    if (!this.cooledDown(this.rekeyedAt, from)) return;
    const kid = String(decodeProtectedHeader(jwe).kid);
    this.track(
      this.send(from, REKEY, { kid }).catch((err: Error) =>
        this.o.log.warn({ peer: from, err: err.message }, 'cannot ask a shard to attest this one again'),
      ),
    );
  }

  /** A peer says it could not read what we sealed to its key `kid` (it restarted): drop that key. */
  private rekeyed(from: string, body: unknown): void {
    const notice = rekeySchema.safeParse(body);
    if (!notice.success) {
      this.refuse(from, 'malformed', `a ${REKEY} notice does not parse`);
      return;
    }
    this.stats.rekeys++;
    if (this.peers.get(from)?.kid !== notice.data.kid) return; // already attested its new run
    this.peers.delete(from);
    this.o.log.warn(
      { peer: from },
      'shard restarted (a new key): what was sealed to its old key since was not read; attesting it again at the next message',
    );
  }

  private track(task: Promise<unknown>): void {
    const tracked = task
      .catch((err: Error) => this.o.log.error({ err: err.message }, 'shard link task failed'))
      .finally(() => this.tasks.delete(tracked));
    this.tasks.add(tracked);
  }
}

function parseJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(data));
  } catch {
    return undefined;
  }
}

function isShardName(name: string): boolean {
  try {
    checkShard(name);
    return true;
  } catch {
    return false;
  }
}
