/**
 * aedes (MQTT 3.1.1) behind a TLS server that requires a client certificate from the regulator CA.
 * Every aedes hook is supplied and denies by default:
 *  - preConnect: identity from the verified peer certificate (never the client id), revocation,
 *    MQTT 3.1.1 only, no wills; the client id is namespaced by identity so one party can never take
 *    over another's session by reusing its client id.
 *  - authenticate: CONNACK 5 (not authorized) when preConnect found no valid identity.
 *  - authorizePublish: the access matrix, then the flow handler (commit) before the PUBACK. aedes
 *    writes the PUBACK when this hook calls back, so whatever the handler published before it
 *    returned (a refusal receipt) is on the sender's socket first (see `publish`).
 *  - authorizeSubscribe: the access matrix; a refused filter gets SUBACK 0x80.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { type ParsedTopic, parseTopic } from '@tre/protocol';
import { Aedes, type Client } from 'aedes';
import { authorizePublish, authorizeSubscribe } from '../access/access-matrix.js';
import { DEFAULT_LIMITS, type IdentityLimitOptions, IdentityLimits } from '../access/identity-limits.js';
import { identityFromCertificate, loggableIdentity, type PeerIdentity } from '../access/peer-identity.js';
import type { Logger } from '../log.js';
import type { RevocationList } from '../pki/revocation-list.js';
import type { MessageRouter, Outbound } from './message-router.js';

export interface TlsMaterial {
  key: string;
  cert: string;
  ca: string;
}

export interface BrokerOptions {
  tls: TlsMaterial;
  revocations: RevocationList;
  host?: string;
  port?: number;
  log: Logger;
  /** How often the CRL file is polled for changes (ms). */
  revocationPollMs?: number;
  /** Extra admission rule at connect (e.g. unknown meters); returns a refusal reason or undefined. */
  admit?: (who: PeerIdentity) => string | undefined;
  limits?: IdentityLimitOptions;
  /** A TLS handshake not finished within this is dropped (default 10 s). */
  handshakeTimeoutMs?: number;
}

/** Topics a session may publish to, remembered per session at most (a meter uses two or three). */
const ALLOWED_TOPICS_PER_SESSION = 16;

class AccessDenied extends Error {
  override readonly name = 'AccessDenied';
  readonly code = 'ACCESS_DENIED';
}

export class TlsMqttBroker implements Outbound {
  private readonly identities = new WeakMap<Client, PeerIdentity>();
  /**
   * Per session, the topics the access matrix allowed it, parsed: the matrix is fixed in code and a
   * session's identity never changes, so a topic allowed once is allowed for the whole session.
   */
  private readonly allowedTopics = new WeakMap<
    Client,
    Map<string, Extract<ParsedTopic, { scope: 'party' }>>
  >();
  private readonly live = new Set<Client>();
  private readonly limits: IdentityLimits;
  /** Sessions that hold a slot in `limits`. */
  private readonly counted = new WeakSet<Client>();
  private router: MessageRouter | undefined;
  private stopWatching: (() => void) | undefined;

  private constructor(
    readonly aedes: Aedes,
    readonly server: Server,
    private readonly opts: BrokerOptions,
  ) {
    this.limits = new IdentityLimits(opts.limits ?? DEFAULT_LIMITS);
  }

  static async start(opts: BrokerOptions): Promise<TlsMqttBroker> {
    const log = opts.log.child({ module: 'broker' });
    let self: TlsMqttBroker;
    const aedes = await Aedes.createBroker({
      connectTimeout: 10_000,
      drainTimeout: 30_000,
      maxTopicLevels: 8,
      preConnect: (client, packet, cb) => self.preConnect(client, packet, cb),
      authenticate: (client, _u, _p, cb) => {
        if (self.identities.has(client)) return cb(null, true);
        const err = Object.assign(new Error('not authorized'), { returnCode: 5 as const });
        cb(err, false);
      },
      authorizePublish: (client, packet, cb) => {
        self.authorizePublish(client, packet.topic, packet.retain, packet.payload as Buffer).then(
          () => cb(null),
          (err: Error) => cb(err),
        );
      },
      authorizeSubscribe: (client, sub, cb) => {
        const who = self.identities.get(client);
        const decision = who
          ? authorizeSubscribe(who, sub.topic)
          : { allowed: false as const, reason: 'no identity' };
        if (decision.allowed) return cb(null, sub);
        log.warn({ ...(who ? loggableIdentity(who) : {}), reason: decision.reason }, 'subscribe refused');
        cb(null, null);
      },
      authorizeForward: (_client, packet) => packet,
    });
    const server = createServer(
      {
        key: opts.tls.key,
        cert: opts.tls.cert,
        ca: opts.tls.ca,
        crl: opts.revocations.crlPem,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      },
      (socket) => aedes.handle(socket),
    );
    self = new TlsMqttBroker(aedes, server, opts);
    aedes.on('clientReady', (client) => self.live.add(client));
    aedes.on('clientDisconnect', (client) => self.live.delete(client));
    aedes.on('clientDisconnect', (client) => self.releaseSlot(client));
    aedes.on('clientError', (client) => self.releaseSlot(client));
    aedes.on('connectionError', (client) => self.releaseSlot(client));
    server.on('tlsClientError', (err, socket) => {
      log.debug({ err: err.message }, 'TLS handshake refused');
      // With a listener attached Node leaves the socket open: a stalled handshake would hold it forever.
      socket.destroy();
    });
    aedes.on('clientError', (_client, err) => log.debug({ err: err.message }, 'client error'));
    aedes.on('connectionError', (_client, err) => log.debug({ err: err.message }, 'connection error'));
    return self;
  }

  /**
   * Accepts connections, from when every handler is registered (`setRouter` and the flows): a
   * request arriving earlier, e.g. an agent's attestation after a restart, would find no route.
   */
  async listen(): Promise<void> {
    const log = this.opts.log.child({ module: 'broker' });
    this.server.listen(this.opts.port ?? 8883, this.opts.host ?? '127.0.0.1');
    await once(this.server, 'listening');
    this.stopWatching = this.opts.revocations.watch(
      this.opts.revocationPollMs ?? 1000,
      () => this.onRevocationsChanged(),
      (err) => log.error({ err: err.message }, 'revocation list not reloaded'),
    );
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  setRouter(router: MessageRouter): void {
    this.router = router;
  }

  /** Number of connected, identified sessions. */
  get sessions(): number {
    return this.live.size;
  }

  private preConnect(
    client: Client,
    packet: { clientId: string; protocolVersion?: number; will?: unknown },
    cb: (err: Error | null, ok: boolean) => void,
  ): void {
    const log = this.opts.log;
    try {
      const socket = client.conn as TLSSocket;
      if (!socket.authorized)
        throw new AccessDenied(`TLS peer not authorised: ${String(socket.authorizationError)}`);
      const who = identityFromCertificate(socket.getPeerX509Certificate());
      if (this.opts.revocations.isRevoked(who.serial)) throw new AccessDenied('certificate revoked');
      if (packet.protocolVersion !== 4) throw new AccessDenied('only MQTT 3.1.1 is supported');
      if (packet.will) throw new AccessDenied('wills are not supported');
      const refusal = this.opts.admit?.(who);
      if (refusal) throw new AccessDenied(refusal);
      if (!this.limits.openSession(`${who.role}:${who.id}`))
        throw new AccessDenied('too many sessions for this identity');
      this.counted.add(client);
      // An empty client id stays empty: aedes then assigns a random one.
      if (packet.clientId) packet.clientId = `${who.role}:${who.id}:${packet.clientId}`;
      this.identities.set(client, who);
      log.debug({ ...loggableIdentity(who) }, 'client identified');
    } catch (err) {
      log.warn({ reason: (err as Error).message }, 'connection refused');
    }
    // Refusal is answered by authenticate (CONNACK 5) so clients get a clear reason.
    cb(null, true);
  }

  private async authorizePublish(
    client: Client | null,
    topic: string,
    retain: boolean,
    payload: Buffer,
  ): Promise<void> {
    const who = client ? this.identities.get(client) : undefined;
    if (!client || !who) throw new AccessDenied('publish without identity');
    let parsed = retain ? undefined : this.allowedTopics.get(client)?.get(topic);
    if (!parsed) {
      const decision = authorizePublish(who, topic, retain);
      if (!decision.allowed) {
        this.opts.log.warn(
          { ...loggableIdentity(who), reason: decision.reason },
          'publish refused; closing connection',
        );
        throw new AccessDenied(decision.reason);
      }
      const route = parseTopic(topic);
      if (route?.scope !== 'party') throw new AccessDenied('no route');
      parsed = route;
      const allowed = this.allowedTopics.get(client) ?? new Map();
      this.allowedTopics.set(client, allowed);
      if (allowed.size < ALLOWED_TOPICS_PER_SESSION) allowed.set(topic, route);
    }
    if (!this.router) throw new AccessDenied('no route');
    if (!this.limits.takeMessage(`${who.role}:${who.id}`)) {
      await this.router.refuse(
        { from: who, topic: parsed, payload },
        'RATE_LIMITED',
        'over the per-identity message rate; slow down and retry',
      );
      return;
    }
    await this.router.route({ from: who, topic: parsed, payload });
  }

  private releaseSlot(client: Client): void {
    const who = this.identities.get(client);
    if (!who || !this.counted.has(client)) return;
    this.counted.delete(client);
    this.limits.closeSession(`${who.role}:${who.id}`);
  }

  private onRevocationsChanged(): void {
    this.server.setSecureContext({
      key: this.opts.tls.key,
      cert: this.opts.tls.cert,
      ca: this.opts.tls.ca,
      crl: this.opts.revocations.crlPem,
    });
    let dropped = 0;
    for (const client of this.live) {
      const who = this.identities.get(client);
      if (who && this.opts.revocations.isRevoked(who.serial)) {
        client.close();
        dropped++;
      }
    }
    this.opts.log.info({ dropped }, 'revocation list reloaded');
  }

  /**
   * Publishes from the TRE (QoS1). Resolves once aedes has delivered it: written to the socket of
   * every session subscribed to it (aedes calls back after each subscriber's write, or after queueing
   * it for a session that is offline). So a receipt a handler awaits is written to the sender's
   * connection before the PUBACK of the message it answers.
   */
  publish(topic: string, payload: string | Buffer, opts: { retain?: boolean } = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      this.aedes.publish(
        {
          cmd: 'publish',
          topic,
          payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
          qos: 1,
          retain: opts.retain ?? false,
          dup: false,
        },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /** Stops accepting, closes every session, closes aedes. */
  async close(): Promise<void> {
    this.stopWatching?.();
    const closed = this.server.listening
      ? new Promise<void>((resolve) => this.server.close(() => resolve()))
      : Promise.resolve();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await closed;
  }
}
