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
 * Sending. Before the first message to a peer, the link attests it (timeout, retries with backoff);
 * an untrusted peer is sent nothing (`send` rejects with the check that failed) and is asked again
 * at most once per `cooldownMs`. Messages are sealed (sealed-envelope.ts) and sent as NATS
 * requests on `message(to, from)`; the reply comes to this shard's inbox prefix.
 * Sending to this shard's own name runs its handler in process, on a JSON copy of the body, in
 * order with this shard's other messages to itself (one sent from such a handler runs at once).
 *
 * Delivery: acknowledged, retried, deduplicated. `send` resolves once the receiver answered that
 * its handler ran (`handled`) or had already run for this message (`duplicate`). The answer is a
 * small JWS signed by the receiver's TLS key (no body; `signAnswer`), so NATS cannot fake one.
 *  - No answer (the receiver down, restarting, failing over to a standby, a NATS node lost; NATS
 *    core keeps nothing): the message is resent, waits doubling from `deliveryBackoffMs` to
 *    `deliveryBackoffMaxMs`, until `deliveryDeadlineMs` (60 s: longer than a failover takeover,
 *    ~3-11 s) after `send`; after `reattestAfterTimeouts` unanswered tries in a row, and whenever
 *    an answer does not verify with the key the peer was attested with, the peer is attested
 *    again first (a standby that took over is another TRE, with its own keys). A peer that does
 *    not answer its attestation is retried the same way. After the deadline `send` rejects:
 *    PEER_UNREACHABLE when the peer was never attested (nothing was sent), NOT_DELIVERED when
 *    sealed messages went out unanswered (it may or may not have been handled).
 *  - `refused` `stale-key`: the peer restarted (a new encryption key). The link drops its keys,
 *    attests the new run and reseals at once. This replaces the `link.rekey` notice of earlier
 *    versions. `unattested-sender` or `bad-signature` (the peer could not reach this shard's hello, or
 *    holds an old key of it, and attests it again): retried with backoff. Any other refusal
 *    (`untrusted-sender`: this shard failed a check there; `no-handler`, `stale` ...) rejects
 *    with REFUSED naming it: resending would not help.
 *  - `failed`: the handler threw. Not retried: handlers check their bodies with zod, so a body
 *    refused once is refused again; `send` rejects with HANDLER_FAILED (the error's code or name,
 *    never its message). Except `unavailable`: a handler that threw an error with `code`
 *    'STORAGE_UNAVAILABLE' (StoreError: the disk, not the message) did not commit; the receiver
 *    forgets the id and the sender retries as for no answer.
 * Every try of one message carries the same id (resealed with a fresh `iat`, maybe to a new key).
 * So this is at-least-once, deduplicated by id at a running receiver: effectively once while the
 * receiver keeps its memory. A receiver that restarted or failed over does not know the ids its
 * earlier run handled: a message it handled whose answer was lost is handled again by the new run
 * (its handler must tolerate that, see ShardCluster.send).
 *
 * Receiving. Each message on `messagesTo(shard)`: its subject's sender is attested first (it may
 * have restarted), then the message is opened (refused: not for us, unattested sender, bad
 * signature, `from` differing from the subject's sender, older than `maxAgeMs`) and passed to its
 * kind's handler, one sender's messages in order. The answer goes to the request's reply subject
 * only when that is in the sender's inbox prefix (`_INBOX.<from>.`); a message without one (e.g.
 * one NATS published itself) is handled the same but not answered. Ids are remembered per sender
 * with the outcome, before the handler runs, as long as `maxAgeMs` after the last copy's `iat`: a
 * copy of a handled id is answered `duplicate` (counted in `duplicates`) and never run again; a
 * copy of one that failed gets `failed` again; a copy arriving while the first is still handled
 * waits behind it (the sender's chain) and is answered once it is done. An unchanged copy of a
 * sealed message older than `maxAgeMs` is refused `stale`. Refusals are logged at warn and
 * counted, handler failures at warn; nothing is thrown; no log line carries a body (household
 * data).
 *
 * Re-attestation, kept simple: an attestation older than `reattestMs` (1 h) is renewed before the
 * next message to or from that peer (lazily, no timer). A message whose signature fails with a
 * peer's cached TLS key makes the link re-attest that peer (at most once per `cooldownMs`) and try
 * once more.
 *
 * Times (certificate validity, `iat`, ages) follow `clock`; every shard must run on the same time
 * source. Request timeouts and retry backoff are transport waits in real time.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Msg, type NatsConnection, NoRespondersError, type Subscription } from '@nats-io/transport-node';
import { type Clock, checkShard, type Evidence, senderOf, shardSubjects, systemClock } from '@tre/protocol';
import { exportJWK, type JWK } from 'jose';
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
  newMessageId,
  type OpenedMessage,
  open,
  type RefusalReason,
  readAnswer,
  SealedEnvelopeError,
  type ShardAnswer,
  seal,
  signAnswer,
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
  /** At most one forced re-attestation and one retry of an untrusted peer per peer per this. */
  cooldownMs: 10_000,
  /** How long one try of a message waits for the receiver's answer (its handler included). */
  deliveryTimeoutMs: 5_000,
  /** Waits between tries of one message double from this up to `deliveryBackoffMaxMs`. */
  deliveryBackoffMs: 250,
  deliveryBackoffMaxMs: 2_000,
  /**
   * How long `send` keeps trying, from its call: longer than a shard's failover takeover (~3-11 s),
   * shorter than `maxAgeMs` of the receivers.
   */
  deliveryDeadlineMs: 60_000,
  /** Unanswered tries in a row after which the peer is attested again (it may have been replaced). */
  reattestAfterTimeouts: 2,
};

export interface ShardLinkOptions extends Partial<typeof SHARD_LINK_DEFAULTS> {
  /** Connected by the caller with `inboxPrefix: shardSubjects.inboxPrefix(shard)`; the caller closes it. */
  nats: NatsConnection;
  shard: string;
  /** This TRE's certificate (PEM): what peers attest, with its key bound into every quote. */
  treCertificate: string;
  /** This TRE's TLS key (ECDSA P-256): signs every message, every answer and the encryption key. */
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
      | 'NOT_DELIVERED'
      | 'TOO_LARGE'
      | 'REFUSED'
      | 'HANDLER_FAILED'
      | 'NO_HANDLER'
      | 'HANDLER_EXISTS',
    message: string,
    readonly peer?: string,
    readonly check?: PeerCheck,
    /** REFUSED: the receiver's refusal; HANDLER_FAILED: the handler error's code or name. */
    readonly reason?: string,
  ) {
    super(message);
  }
}

/** Why the link refused a message: the envelope's reasons and the link's own. */
export type LinkRefusal = RefusalReason | 'unattested-sender' | 'stale' | 'no-handler';
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
  'no-handler',
];
/** Refusals a retry may overcome: the receiver attests this shard again first. */
const RETRIED_REFUSALS: ReadonlySet<string> = new Set<LinkRefusal>(['unattested-sender', 'bad-signature']);
/** A handler error with this `code` did not commit (StoreError): the sender retries. */
const RETRYABLE_CODE = 'STORAGE_UNAVAILABLE';

const helloRequestSchema = z.strictObject({
  v: z.literal(1),
  nonce: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
});

/** What the link holds of an attested peer. */
type Peer = VerifiedPeer;

/** A handler's outcome, as answered (and remembered with the id). */
type Outcome = Pick<ShardAnswer, 'status' | 'reason'>;

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
    /** Messages to other shards their receiver acknowledged (handled, or had handled). */
    sent: 0,
    /** Messages from other shards passed to their handler (once per id). */
    received: 0,
    /** Sent to this shard itself (in process). */
    local: 0,
    /** Tries beyond the first of a message to another shard. */
    retries: 0,
    /** Copies of an id already handled (or failed) here: answered, not run again. */
    duplicates: 0,
    /** Messages `send` gave up on (deadline, refusal, handler failure at the receiver). */
    undelivered: 0,
    /** `stale-key` answers: a peer restarted and could not read what we sealed to its old key. */
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
  /** When each peer last had a forced re-attestation. */
  private readonly forcedAt = new Map<string, number>();
  /**
   * Ids opened (`<from>/<id>`), with their outcome (undefined while the handler runs) and when
   * they may be forgotten (the last copy's `iat` + maxAgeMs).
   */
  private readonly seen = new Map<string, { outcome?: Outcome; forgetAt: number }>();
  /** One chain per sender: its messages are handled in order. */
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly tasks = new Set<Promise<unknown>>();
  /** Set while a handler of a message this shard sent itself runs (its own sends run at once). */
  private readonly inLocalHandler = new AsyncLocalStorage<true>();
  /** Aborts the waits of sends still retrying when the link stops. */
  private readonly stopping = new AbortController();
  /** Sends not yet answered (attesting the peer, sealing, waiting for the answer, retrying). */
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

  /**
   * Stops answering and receiving, waits for what is in hand, and forgets the encryption key.
   * Sends still retrying reject with NOT_STARTED.
   */
  async stop(): Promise<void> {
    if (this.state !== 'started') return;
    this.state = 'stopped';
    this.stopping.abort();
    for (const s of this.subscriptions) s.unsubscribe();
    this.subscriptions = [];
    await Promise.allSettled([...this.chains.values(), ...this.tasks, ...this.attesting.values()]);
    this.own = undefined;
    this.peers.clear();
    this.seen.clear();
  }

  on(kind: ShardMessageKind, handler: ShardMessageHandler): void {
    if (this.handlers.has(kind))
      throw new ShardLinkError('HANDLER_EXISTS', `a handler for ${kind} is already registered`);
    this.handlers.set(kind, handler);
  }

  /**
   * Seals `body` to `to` and resolves once `to` handled it (or had already): see the module
   * comment for retries and what it rejects with.
   */
  async send(to: string, kind: ShardMessageKind, body: unknown): Promise<void> {
    this.assertStarted();
    if (to === this.o.shard) return this.deliverLocally(kind, body);
    this.assertInRoster(to);
    this.sending++;
    try {
      await this.deliver(to, kind, body);
    } catch (err) {
      this.stats.undelivered++;
      throw err;
    } finally {
      this.sending--;
    }
  }

  /**
   * Work in hand: sends not yet answered (attesting the peer, sealing, waiting for the answer,
   * retrying, local ones being handled) and received messages not yet handled. 0 when this link
   * is idle.
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

  /**
   * Runs the handler in process, in order with this shard's other messages to itself, and resolves
   * once it ran; rejects with HANDLER_FAILED when it threw (not retried, whatever the error). A
   * message sent to itself from such a handler runs at once: queued behind the handler sending it,
   * it would wait for it forever.
   */
  private async deliverLocally(kind: string, body: unknown): Promise<void> {
    const handler = this.handlers.get(kind);
    if (!handler) throw new ShardLinkError('NO_HANDLER', `shard ${this.o.shard} has no handler for ${kind}`);
    const copy = body === undefined ? undefined : JSON.parse(JSON.stringify(body));
    this.stats.local++;
    const run = () => this.inLocalHandler.run(true, () => this.dispatch(handler, this.o.shard, kind, copy));
    this.sending++;
    let outcome: Outcome;
    try {
      outcome = await (this.inLocalHandler.getStore() ? run() : this.inOrder(this.o.shard, run));
    } finally {
      this.sending--;
    }
    if (outcome.status !== 'handled') throw this.handlerFailed(this.o.shard, kind, outcome);
  }

  private handlerFailed(peer: string, kind: string, outcome: Outcome): ShardLinkError {
    return new ShardLinkError(
      'HANDLER_FAILED',
      `the ${kind} handler of shard ${peer} failed (${outcome.reason ?? 'an error'}): not retried; its log (warn) names the message`,
      peer,
      undefined,
      outcome.reason,
    );
  }

  // --- delivering ------------------------------------------------------------------------------

  /** Tries until `to` answers `handled` or `duplicate`, or the deadline; one id for every try. */
  private async deliver(to: string, kind: string, body: unknown): Promise<void> {
    const id = newMessageId();
    const subject = shardSubjects.message(to, this.o.shard);
    const deadline = performance.now() + this.o.deliveryDeadlineMs;
    let tries = 0;
    let unanswered = 0;
    let staleKeys = 0;
    /** The keys that went unanswered or unverified: attest the peer again unless someone did. */
    let doubted: Peer | undefined;
    let backoff = this.o.deliveryBackoffMs;
    let problem = '';
    for (;;) {
      this.assertStarted();
      let immediately = false;
      const force = doubted !== undefined && this.peers.get(to) === doubted;
      const peer = await this.peer(to, force, deadline).catch((err: unknown) => {
        if (err instanceof ShardLinkError && err.code === 'PEER_UNREACHABLE') {
          problem = err.message;
          return undefined;
        }
        throw err; // untrusted, or this link stopped
      });
      if (peer) {
        doubted = undefined;
        const jwe = await seal(body, {
          kind,
          from: this.o.shard,
          to,
          signingKey: this.o.signingKey,
          recipientKey: peer.encryptionKey,
          iat: this.o.clock.now(),
          id,
        });
        this.assertStarted();
        const max = this.o.nats.info?.max_payload;
        if (max !== undefined && jwe.length > max)
          throw new ShardLinkError(
            'TOO_LARGE',
            `the ${kind} message to shard ${to} is ${jwe.length} bytes sealed, over NATS's max_payload of ${max}: nothing was sent (raise max_payload on every NATS server, or send less at once)`,
            to,
          );
        if (tries++ > 0) this.stats.retries++;
        const timeout = Math.max(1, Math.min(this.o.deliveryTimeoutMs, deadline - performance.now()));
        let reply: Msg | undefined;
        try {
          reply = await this.o.nats.request(subject, jwe, { timeout });
        } catch (err) {
          problem = isNoResponders(err)
            ? `no one listens on ${subject}`
            : `no answer within ${timeout} ms (${(err as Error).message})`;
        }
        const answer =
          reply &&
          (await readAnswer(decoder.decode(reply.data), { tlsKey: peer.tlsKey, from: to, to: this.o.shard }));
        if (answer && answer.id !== undefined && answer.id !== id) {
          problem = 'an answer for another message';
        } else if (answer) {
          unanswered = 0;
          if (answer.reason !== 'stale-key') staleKeys = 0;
          switch (answer.status) {
            case 'handled':
            case 'duplicate':
              this.stats.sent++;
              if (tries > 1)
                this.o.log.info({ peer: to, kind, id, tries }, 'shard message delivered after retries');
              return;
            case 'failed':
              throw this.handlerFailed(to, kind, answer);
            case 'unavailable':
              problem = `its ${kind} handler could not commit (${answer.reason ?? 'unavailable'})`;
              break;
            case 'refused':
              if (answer.reason === 'stale-key') {
                this.stats.rekeys++;
                if (this.peers.get(to) === peer) this.peers.delete(to);
                this.o.log.warn(
                  { peer: to, kind, id },
                  'shard restarted (a new key): attesting it again and resealing',
                );
                problem = 'it refused the message as sealed to an earlier key of it (stale-key)';
                immediately = staleKeys++ === 0; // at once the first time; again, after a wait
                break;
              }
              if (answer.reason && RETRIED_REFUSALS.has(answer.reason)) {
                problem = `it refused the message (${answer.reason}); it attests this shard again`;
                break;
              }
              throw new ShardLinkError(
                'REFUSED',
                `shard ${to} refused the ${kind} message (${answer.reason ?? 'no reason'}): ${
                  answer.reason === 'untrusted-sender'
                    ? `shard ${to} does not trust this shard's attestation (the check it failed is in its log)`
                    : 'its log (warn) says why'
                }; it was not handled`,
                to,
                undefined,
                answer.reason,
              );
          }
        } else {
          if (reply) problem = `an answer not signed by the attested key of ${to} (replaced by another TRE?)`;
          unanswered++;
          if (reply || unanswered % this.o.reattestAfterTimeouts === 0) doubted = peer;
        }
      }
      const left = deadline - performance.now();
      if (left <= 0) throw this.notDelivered(to, kind, tries, problem);
      if (immediately) continue;
      await sleep(Math.min(backoff, left), undefined, { signal: this.stopping.signal }).catch(() => {});
      backoff = Math.min(backoff * 2, this.o.deliveryBackoffMaxMs);
    }
  }

  private notDelivered(to: string, kind: string, tries: number, problem: string): ShardLinkError {
    const within = `within ${Math.round(this.o.deliveryDeadlineMs / 1000)} s`;
    if (tries === 0) {
      this.o.log.warn({ peer: to, kind }, 'shard unreachable: message not sent');
      return new ShardLinkError(
        'PEER_UNREACHABLE',
        `shard ${to} could not be attested ${within} (last: ${problem}). Nothing was sent to it: is it (its primary or a standby) running and connected to NATS?`,
        to,
      );
    }
    this.o.log.warn({ peer: to, kind, tries }, 'shard message not delivered');
    return new ShardLinkError(
      'NOT_DELIVERED',
      `shard ${to} did not acknowledge the ${kind} message ${within} (${tries} tries; last: ${problem}); it may or may not have been handled: is shard ${to} (its primary or a standby) running and connected to NATS, and is its lease held?`,
      to,
    );
  }

  // --- attesting peers -------------------------------------------------------------------------

  /**
   * The attested keys of a peer: cached, or attested now (one attestation at a time per peer; the
   * one starting it bounds it by `until`).
   */
  private async peer(shard: string, force = false, until?: number): Promise<Peer> {
    const now = this.o.clock.now();
    const known = this.peers.get(shard);
    if (known && !force && now - known.attestedAt < this.o.reattestMs) return known;
    const refused = this.untrusted.get(shard);
    if (refused && now < refused.until) throw refused.error;
    let pending = this.attesting.get(shard);
    if (!pending) {
      pending = this.attest(shard, until).finally(() => this.attesting.delete(shard));
      this.attesting.set(shard, pending);
    }
    return pending;
  }

  /** Asks the peer's hello, up to `attestAttempts` times and not past `until` (performance.now()). */
  private async attest(peer: string, until = Number.POSITIVE_INFINITY): Promise<Peer> {
    this.peers.delete(peer); // until it is attested again, nothing is sealed to what it had
    const subject = shardSubjects.hello(peer);
    let problem = '';
    let attempts = 0;
    for (let attempt = 0; attempt < this.o.attestAttempts; attempt++) {
      if (attempt > 0) await sleep(this.o.attestBackoffMs * 2 ** (attempt - 1));
      this.assertStarted();
      const left = until - performance.now();
      if (left <= 0) break;
      attempts++;
      const nonce = randomBytes(32);
      let reply: Msg;
      try {
        reply = await this.o.nats.request(
          subject,
          JSON.stringify({ v: 1, nonce: nonce.toString('base64url') }),
          { timeout: Math.max(1, Math.min(this.o.attestTimeoutMs, left)) },
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
    this.o.log.warn({ peer, attempts, err: problem }, 'shard did not answer attestation');
    throw new ShardLinkError(
      'PEER_UNREACHABLE',
      `shard ${peer} did not answer its attestation request on ${subject} (${attempts} attempts; last: ${problem || 'out of time'}): is it running and connected to NATS? Nothing was sent to it`,
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
    // Answers go to the sender's own inbox only: with `allow_responses` the requester names the
    // reply subject, and one naming another shard's subject would make the answer land there.
    const answerable =
      isShardName(from) && msg.reply?.startsWith(`${shardSubjects.inboxPrefix(from)}.`) === true;
    void this.inOrder(from, async () => {
      const answer = await this.receive(from, jwe);
      if (answer && answerable) await this.answer(msg, from, answer); // also while stopping: fewer retries
    });
  }

  private async answer(msg: Msg, to: string, answer: Omit<ShardAnswer, 'v' | 'from' | 'to'>): Promise<void> {
    try {
      msg.respond(await signAnswer({ v: 1, from: this.o.shard, to, ...answer }, this.o.signingKey));
    } catch (err) {
      this.o.log.warn({ peer: to, err: (err as Error).message }, 'cannot answer a shard message');
    }
  }

  /**
   * Runs `task` after the sender's earlier messages, with its result; the chain itself never
   * rejects (a failure of `task` is logged and given to the caller only).
   */
  private inOrder<T>(from: string, task: () => Promise<T>): Promise<T> {
    const result = (this.chains.get(from) ?? Promise.resolve()).then(task);
    const next = result
      .catch((err: Error) => this.o.log.error({ from, err: err.message }, 'shard message handling failed'))
      .finally(() => {
        if (this.chains.get(from) === next) this.chains.delete(from);
      });
    this.chains.set(from, next);
    return result;
  }

  private refuse(from: string, reason: LinkRefusal, why: string, id?: string) {
    this.stats.refused[reason]++;
    this.o.log.warn({ from, reason, why, ...(id && { id }) }, 'shard message refused');
    return { status: 'refused' as const, reason, ...(id && { id }) };
  }

  /** Opens and handles one message; what to answer (undefined: nothing, the link is stopping). */
  private async receive(
    from: string,
    jwe: string,
  ): Promise<Omit<ShardAnswer, 'v' | 'from' | 'to'> | undefined> {
    if (this.state !== 'started') return undefined; // the sender retries: the next run answers
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
      const refusal = this.refuse(from, 'unattested-sender', (err as Error).message);
      // Untrusted (a failed check, not a missed answer): resending within the cooldown cannot help.
      const untrusted = err instanceof ShardLinkError && err.code === 'PEER_UNTRUSTED';
      return untrusted ? { ...refusal, reason: 'untrusted-sender' } : refusal;
    }
    let opened: OpenedMessage;
    try {
      opened = await this.openFrom(from, jwe, peer);
    } catch (err) {
      if (!(err instanceof SealedEnvelopeError)) {
        return this.refuse(from, 'unattested-sender', (err as Error).message);
      }
      return this.refuse(from, err.code, err.message);
    }
    const { id, kind } = opened;
    const now = this.o.clock.now();
    if (Math.abs(now - opened.iat) > this.o.maxAgeMs)
      return this.refuse(from, 'stale', `sealed ${Math.round((now - opened.iat) / 1000)} s ago`, id);
    const key = `${from}/${id}`;
    const known = this.seen.get(key);
    if (known) {
      // Handled, or failed, before (the per-sender chain ran the first copy to its end).
      this.stats.duplicates++;
      this.remember(key, known.outcome, opened.iat + this.o.maxAgeMs, now);
      this.o.log.info({ from, kind, id }, 'a shard message again (a retry): answered, not handled again');
      const outcome = known.outcome ?? { status: 'handled' };
      return { id, ...(outcome.status === 'handled' ? { status: 'duplicate' } : outcome) };
    }
    const handler = this.handlers.get(kind);
    if (!handler) return this.refuse(from, 'no-handler', `no handler for ${kind}`, id);
    this.remember(key, undefined, opened.iat + this.o.maxAgeMs, now); // before the handler runs
    this.stats.received++;
    const outcome = await this.dispatch(handler, from, kind, opened.body, id);
    if (outcome.status === 'unavailable')
      this.seen.delete(key); // not committed: a retry runs it
    else this.seen.get(key)!.outcome = outcome;
    return { id, ...outcome };
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
      if (!this.mayForceAttestation(from)) throw err;
      this.o.log.info({ peer: from }, 'a message failed its signature check: attesting the sender again');
      return attempt(await this.peer(from, true));
    }
  }

  /** Runs a handler; its outcome (a throw is logged by name and code and answered, never rethrown). */
  private async dispatch(
    handler: ShardMessageHandler,
    from: string,
    kind: string,
    body: unknown,
    id?: string,
  ): Promise<Outcome> {
    try {
      await handler(from, body);
      return { status: 'handled' };
    } catch (err) {
      this.stats.handlerErrors++;
      // The error's message may quote the body: only its name and code are logged and answered.
      const { name, code } = err as { name?: string; code?: unknown };
      this.o.log.warn({ from, kind, id, error: name, code }, 'shard message handler failed');
      const reason = safeReason(typeof code === 'string' ? code : name);
      return { status: code === RETRYABLE_CODE ? 'unavailable' : 'failed', ...(reason && { reason }) };
    }
  }

  /** Notes an id (moved to the end: the map stays roughly in `forgetAt` order) and forgets expired ones. */
  private remember(key: string, outcome: Outcome | undefined, forgetAt: number, now: number): void {
    const at = Math.max(forgetAt, this.seen.get(key)?.forgetAt ?? 0);
    this.seen.delete(key);
    this.seen.set(key, { outcome, forgetAt: at });
    for (const [old, entry] of this.seen) {
      if (entry.forgetAt > now) break; // the rest is newer
      if (entry.outcome) this.seen.delete(old); // one still being handled stays
    }
  }

  /** True (and noted) when `peer` had no forced re-attestation within the cooldown. */
  private mayForceAttestation(peer: string): boolean {
    const now = this.o.clock.now();
    const last = this.forcedAt.get(peer);
    if (last !== undefined && now - last < this.o.cooldownMs) return false;
    this.forcedAt.set(peer, now);
    return true;
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

function isNoResponders(err: unknown): boolean {
  return err instanceof NoRespondersError || (err as { cause?: unknown })?.cause instanceof NoRespondersError;
}

/** An error's code or name as an answer may carry it (no free text); undefined otherwise. */
function safeReason(reason: string | undefined): string | undefined {
  return reason && /^[A-Za-z0-9_.-]{1,64}$/.test(reason) ? reason : undefined;
}

function isShardName(name: string): boolean {
  try {
    checkShard(name);
    return true;
  } catch {
    return false;
  }
}
