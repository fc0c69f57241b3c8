/**
 * A grid party's MQTT connection (mTLS, its own certificate), recording everything it receives.
 * Like a meter agent, a party sends nothing before the TRE on its connection has passed
 * attestation: its own fresh nonce on its own `attest` topic, the evidence on its own
 * `inbox/attestation`, the agent's verifier (`tpmQuoteAttestor` from @tre/meter-agent), again after
 * every reconnect. Until then `publish` waits; after a failed attestation it refuses.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { TLSSocket } from 'node:tls';
import type { TreAttestor } from '@tre/meter-agent';
import { type Identity, parseIdentity, topics } from '@tre/protocol';
import type { IssuedFiles } from '@tre/tre-broker';
import mqtt, { type MqttClient } from 'mqtt';

export interface Received {
  topic: string;
  payload: string;
  at: number;
}

export type TrustVerdict = Awaited<ReturnType<TreAttestor>>;
export type Distrust = Extract<TrustVerdict, { trusted: false }>;

/** The TRE on the connection failed attestation: nothing was (or will be) sent to it. */
export class UntrustedTreError extends Error {
  override readonly name = 'UntrustedTreError';
  constructor(readonly verdict: Distrust) {
    super(`the TRE failed attestation (${verdict.check}): ${verdict.reason}`);
  }
}

/** The party's identity, from the SAN URI of its own certificate (`urn:tre:<role>:<id>`). */
export function identityOfCertificate(pem: Buffer | string): Identity {
  const uri = new X509Certificate(pem).subjectAltName?.split(', ').find((n) => n.startsWith('URI:urn:tre:'));
  if (!uri) throw new Error('the party certificate names no identity (SAN URI urn:tre:<role>:<id>)');
  return parseIdentity(uri.slice(4));
}

export class PartyClient {
  /** Every message this party received: checked by the simulator for household identifiers. */
  readonly received: Received[] = [];
  /** Sends that failed (`send`), e.g. refused because the TRE failed attestation after a reconnect. */
  readonly errors: string[] = [];
  lastActivity = 0;
  /** The verdict on the TRE of the current connection; pending while disconnected or attesting. */
  private trust: Promise<TrustVerdict>;
  private onReconnected: ((v: TrustVerdict) => void) | undefined;
  private closed = false;

  private constructor(
    readonly client: MqttClient,
    readonly me: Identity,
    private readonly attestor: TreAttestor,
  ) {
    client.on('message', (topic, payload) => {
      this.lastActivity = performance.now();
      this.received.push({ topic, payload: payload.toString('utf8'), at: Date.now() });
    });
    this.trust = this.attest();
    client.on('close', () => {
      if (this.closed || this.onReconnected) return;
      this.trust = new Promise((resolve) => {
        this.onReconnected = resolve;
      });
    });
    client.on('connect', () => {
      const verdict = this.attest();
      const waiting = this.onReconnected;
      this.onReconnected = undefined;
      this.trust = verdict;
      if (waiting) void verdict.then(waiting);
    });
  }

  /**
   * Connects with the party's certificate and attests the TRE with `attestor` (the simulation's
   * `trustWithoutAttestation` when it runs without a TPM). Throws `UntrustedTreError` (after
   * closing the connection) when the TRE fails attestation.
   */
  static async connect(
    url: string,
    files: IssuedFiles,
    clientId: string,
    attestor: TreAttestor,
    opts: { reconnectPeriod?: number } = {},
  ): Promise<PartyClient> {
    const [key, cert, ca] = await Promise.all([
      readFile(files.key),
      readFile(files.cert),
      readFile(files.ca),
    ]);
    const me = identityOfCertificate(cert);
    const client = mqtt.connect(url, {
      key,
      cert,
      ca,
      protocolVersion: 4,
      clientId,
      clean: true,
      reconnectPeriod: opts.reconnectPeriod ?? 1000,
      connectTimeout: 10_000,
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('the connection closed before the TRE accepted it')));
    });
    const party = new PartyClient(client, me, attestor);
    const verdict = await party.trust;
    if (!verdict.trusted) {
      await party.close();
      throw new UntrustedTreError(verdict);
    }
    return party;
  }

  /** The verdict on the TRE of the current connection (waits while attesting or reconnecting). */
  verdict(): Promise<TrustVerdict> {
    return this.trust;
  }

  /** Publishes QoS1 once the TRE on the connection is trusted; throws if it is not. */
  async publish(topic: string, body: unknown): Promise<void> {
    this.lastActivity = performance.now();
    if (this.closed) throw new Error('the party connection is closed');
    const verdict = await this.trust;
    if (!verdict.trusted) throw new UntrustedTreError(verdict);
    await this.client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  }

  /** `publish` from an event handler: a failure is recorded in `errors` instead of thrown. */
  send(topic: string, body: unknown): void {
    this.publish(topic, body).catch((err: Error) => {
      this.errors.push(`${topic}: ${err.message}`);
    });
  }

  async subscribe(filters: string[]): Promise<void> {
    await this.client.subscribeAsync(filters, { qos: 1 });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client.endAsync(true);
  }

  /** The TRE's certificate on this connection must name a TRE; then the attestor decides. */
  private async attest(): Promise<TrustVerdict> {
    try {
      const treCertificate = (this.client.stream as TLSSocket).getPeerX509Certificate?.();
      const uri = treCertificate?.subjectAltName?.split(', ').find((n) => n.startsWith('URI:urn:tre:tre:'));
      if (!treCertificate || !uri)
        return {
          trusted: false,
          check: 'tls',
          reason: 'the server certificate does not name a TRE (urn:tre:tre:*)',
        };
      await this.client.subscribeAsync(topics.inbox(this.me, 'attestation'), { qos: 1 });
      return await this.attestor({ client: this.client, treCertificate, me: this.me });
    } catch (err) {
      return { trusted: false, check: 'attestation', reason: (err as Error).message };
    }
  }
}
