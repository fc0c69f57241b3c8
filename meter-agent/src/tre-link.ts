/**
 * The agent's link to its TRE: MQTT 3.1.1 over mutual TLS with the household's certificate.
 *
 *  - Endpoints are tried in order (failover); every failure waits an exponential backoff with jitter.
 *  - The TRE's certificate must chain to the regulator root (TLS) and name a TRE (`urn:tre:tre:*`).
 *  - Nothing leaves the outbox until the TRE has passed attestation on this connection; it is
 *    re-attested on every reconnect and every `attestEveryMs`.
 *  - The outbox drains in order. An entry is settled by what the TRE answers on this connection:
 *    a receipt that arrives before the entry's PUBACK decides (accepted, or a final refusal: dropped
 *    with its reason; a retryable refusal: resent), and a PUBACK with no receipt before it is an
 *    acceptance (readings: the TRE sends receipts for refusals only, always before the PUBACK; a
 *    duplicate is acknowledged like an acceptance). Entries without an answer are resent after
 *    `receiptTimeoutMs` or a reconnect (the TRE is idempotent).
 *  - Broadcasts and inbox messages are handed on as raw payloads; content checks (TRE signatures)
 *    are done by the consumer with `treCertificate`.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { TLSSocket } from 'node:tls';
import {
  type Clock,
  type Identity,
  PROTOCOL_VERSION,
  parseIdentity,
  parseTopic,
  type Receipt,
  type RefusalReason,
  receiptSchema,
  type TimerHandle,
  topics,
} from '@tre/protocol';
import mqtt, { type MqttClient } from 'mqtt';
import type { Outbox } from './outbox.js';

export interface TlsFiles {
  key: Buffer | string;
  cert: Buffer | string;
  ca: Buffer | string;
}

export type TrustVerdict = { trusted: true } | { trusted: false; check: string; reason: string };

/** Decides whether the TRE on this connection may receive household data. */
export type TreAttestor = (session: {
  client: MqttClient;
  treCertificate: X509Certificate;
  me: Identity;
}) => Promise<TrustVerdict>;

/**
 * Accepts any TRE whose certificate chains to the regulator root, without TPM attestation.
 * For development against a TRE without a TPM only; the name says what it does.
 */
export const trustWithoutAttestation: TreAttestor = async () => ({ trusted: true });

export type LinkState = 'connecting' | 'attesting' | 'trusted' | 'untrusted' | 'offline' | 'stopped';

export interface TreLinkOptions {
  meterId: string;
  endpoints: string[];
  tls: TlsFiles;
  outbox: Outbox;
  clock: Clock;
  attestor: TreAttestor;
  attestEveryMs?: number;
  backoff?: { baseMs: number; maxMs: number };
  receiptTimeoutMs?: number;
  maxInFlight?: number;
}

/** Receipt reasons after which resending later can succeed. */
const RETRYABLE: ReadonlySet<RefusalReason> = new Set([
  'STORAGE_UNAVAILABLE',
  'RATE_LIMITED',
  'INTERNAL',
  'ATTESTATION_UNAVAILABLE',
]);

export interface TreLinkEvents {
  state: [LinkState, string?];
  /**
   * How an outbox entry was answered (with its key): the TRE's receipt, or, for an entry accepted by
   * its PUBACK alone, `{status: 'accepted'}` made here from the PUBACK.
   */
  receipt: [Receipt, string];
  message: [string, Buffer];
}

export function requestIdFor(key: string): string {
  return createHash('sha256').update(key).digest('base64url').slice(0, 32);
}

export class TreLink extends EventEmitter<TreLinkEvents> {
  private client: MqttClient | undefined;
  private endpointIndex = 0;
  private attempt = 0;
  private timer: TimerHandle | undefined;
  private attestTimer: TimerHandle | undefined;
  private readonly inFlight = new Map<string, number>();
  private readonly byRequestId = new Map<string, string>();
  /**
   * Per key, receipts received on this connection not yet matched by a PUBACK. The TRE writes a
   * message's receipt before its PUBACK, so a PUBACK finding a count above 0 follows a receipt
   * that already decided; one finding 0 had none: accepted.
   */
  private readonly receiptsAhead = new Map<string, number>();
  private stopped = false;
  state: LinkState = 'offline';
  treCertificate: X509Certificate | undefined;
  readonly me: Identity;

  constructor(private readonly opts: TreLinkOptions) {
    super();
    if (opts.endpoints.length === 0) throw new Error('at least one TRE endpoint is needed');
    this.me = { role: 'meter', id: opts.meterId };
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.opts.clock.clearTimeout(this.timer);
    if (this.attestTimer) this.opts.clock.clearTimeout(this.attestTimer);
    this.setState('stopped');
    await this.client?.endAsync(true);
  }

  get outboxDepth(): number {
    return this.opts.outbox.depth;
  }

  /** Durably queues a message and sends it when the TRE is trusted. */
  enqueue(key: string, topic: string, body: Record<string, unknown>): void {
    const payload = JSON.stringify({ ...body, requestId: requestIdFor(key) });
    this.opts.outbox.add({ key, topic, payload });
    this.drain();
  }

  private setState(state: LinkState, detail?: string): void {
    this.state = state;
    this.emit('state', state, detail);
  }

  private connect(): void {
    if (this.stopped) return;
    const url = this.opts.endpoints[this.endpointIndex % this.opts.endpoints.length]!;
    this.setState('connecting', url);
    const client = mqtt.connect(url, {
      key: this.opts.tls.key,
      cert: this.opts.tls.cert,
      ca: this.opts.tls.ca,
      rejectUnauthorized: true,
      protocolVersion: 4,
      clientId: `agent-${this.opts.meterId}`,
      clean: false,
      reconnectPeriod: 0,
      // 10 s, then longer after each failure (up to 60 s): when a restarted TRE is accepting
      // thousands of agents at once, a handshake in progress is not abandoned and begun again.
      connectTimeout: Math.min(60_000, 10_000 * 2 ** Math.min(this.attempt, 3)),
    });
    this.client = client;
    let failed = false;
    const fail = (why: string) => {
      if (failed || this.client !== client) return;
      failed = true;
      client.end(true);
      this.inFlight.clear();
      this.receiptsAhead.clear();
      if (this.attestTimer) this.opts.clock.clearTimeout(this.attestTimer);
      if (this.stopped) return;
      this.setState(this.state === 'untrusted' ? 'untrusted' : 'offline', why);
      this.endpointIndex++;
      const { baseMs, maxMs } = this.opts.backoff ?? { baseMs: 1_000, maxMs: 60_000 };
      const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(this.attempt++, 16));
      this.timer = this.opts.clock.setTimeout(
        () => this.connect(),
        ceiling / 2 + Math.random() * (ceiling / 2),
      );
    };
    client.on('error', (err) =>
      // CONNACK "not authorized": the TRE's access check refused this certificate.
      fail(
        /not authorized/i.test(err.message)
          ? `${err.message}: the TRE refused this meter (is it in the regulator's registry, of this TRE's shard, and is its certificate valid and not revoked?)`
          : err.message,
      ),
    );
    client.on('close', () => fail('connection closed'));
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('connect', () => {
      this.onConnected(client).catch((err: Error) => fail(err.message));
    });
  }

  private async onConnected(client: MqttClient): Promise<void> {
    const cert = (client.stream as TLSSocket).getPeerX509Certificate?.();
    const uri = cert?.subjectAltName?.split(', ').find((n) => n.startsWith('URI:urn:tre:tre:'));
    if (!cert || !uri) throw new Error('the server certificate does not name a TRE (urn:tre:tre:*)');
    parseIdentity(uri.slice(4));
    this.treCertificate = cert;
    await client.subscribeAsync(
      [topics.inboxFilter(this.me), topics.broadcastTariffFilter, topics.broadcastDrEventFilter],
      { qos: 1 },
    );
    await this.attest(client);
  }

  private async attest(client: MqttClient): Promise<void> {
    this.setState('attesting');
    const verdict = await this.opts.attestor({ client, treCertificate: this.treCertificate!, me: this.me });
    if (this.client !== client) return;
    if (!verdict.trusted) {
      this.setState('untrusted', `${verdict.check}: ${verdict.reason}`);
      throw new Error(`TRE failed attestation (${verdict.check}): ${verdict.reason}`);
    }
    this.attempt = 0;
    this.setState('trusted');
    this.attestTimer = this.opts.clock.setTimeout(
      () => {
        this.attest(client).catch((err: Error) => {
          client.end(true);
          this.setState('untrusted', err.message);
        });
      },
      this.opts.attestEveryMs ?? 15 * 60_000,
    );
    this.drain();
  }

  /** Sends pending entries in order, up to `maxInFlight` awaiting receipts. */
  drain(): void {
    const client = this.client;
    if (this.state !== 'trusted' || !client?.connected) return;
    const now = this.opts.clock.now();
    const timeout = this.opts.receiptTimeoutMs ?? 30_000;
    for (const [key, sentAt] of this.inFlight) if (now - sentAt > timeout) this.inFlight.delete(key);
    for (const entry of this.opts.outbox.entries()) {
      if (this.inFlight.size >= (this.opts.maxInFlight ?? 64)) break;
      if (this.inFlight.has(entry.key)) continue;
      this.inFlight.set(entry.key, now);
      this.byRequestId.set(requestIdFor(entry.key), entry.key);
      const { key, topic } = entry;
      client.publish(topic, entry.payload, { qos: 1 }, (err) => {
        if (!err && this.client === client) this.onPuback(key, topic);
      });
    }
  }

  /** The TRE acknowledged a publish of `key`: accepted, unless a receipt came before it. */
  private onPuback(key: string, topic: string): void {
    const ahead = this.receiptsAhead.get(key) ?? 0;
    if (ahead > 0) {
      if (ahead === 1) this.receiptsAhead.delete(key);
      else this.receiptsAhead.set(key, ahead - 1);
      return;
    }
    if (!this.opts.outbox.has(key)) return; // settled already (an earlier publish of it)
    const requestId = requestIdFor(key);
    this.inFlight.delete(key);
    this.byRequestId.delete(requestId);
    this.opts.outbox.settle(key);
    const family = parseTopic(topic);
    this.emit(
      'receipt',
      {
        v: PROTOCOL_VERSION,
        requestId,
        family: family?.scope === 'party' ? family.family : topic,
        status: 'accepted',
      },
      key,
    );
    this.drain();
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === topics.inbox(this.me, 'receipt')) {
      const parsed = receiptSchema.safeParse(safeJson(payload));
      if (!parsed.success) return;
      const receipt = parsed.data;
      const key = this.byRequestId.get(receipt.requestId);
      if (!key) return;
      this.receiptsAhead.set(key, (this.receiptsAhead.get(key) ?? 0) + 1);
      this.inFlight.delete(key);
      if (receipt.status === 'accepted' || !RETRYABLE.has(receipt.reason!)) {
        this.byRequestId.delete(receipt.requestId);
        this.opts.outbox.settle(key, receipt.reason);
      }
      this.emit('receipt', receipt, key);
      this.drain();
      return;
    }
    this.emit('message', topic, payload);
  }
}

function safeJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
}
