/**
 * Test support: a TRE on a free loopback port with a fresh PKI in a temp dir, and MQTT clients
 * that connect with issued certificates. Shared by the tests of other workspaces too.
 */

import { createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Clock,
  type Household,
  type PartyRole,
  PROTOCOL_VERSION,
  type Receipt,
  signContent,
  topics,
} from '@tre/protocol';
import {
  CertificateAuthority,
  createLogger,
  type DemandResponseOptions,
  endorseAk,
  type IdentityLimitOptions,
  type IssuedFiles,
  type MonitoringOptions,
  provisionTre,
  type RunningTre,
  startTre,
  type Validity,
} from '@tre/tre-broker';
import mqtt, { type MqttClient } from 'mqtt';

export interface TreFixture {
  dir: string;
  /** The regulator's PKI directory (ca.key, issued client certificates). */
  pkiDir: string;
  /** The TRE's certificate directory (tre.crt, ca.crt, crl.pem; the key is sealed or, without TPM, tre.key). */
  treDir: string;
  ca: CertificateAuthority;
  tre: RunningTre;
  url: string;
  /** Issues a certificate; a meter is also registered (supplier s1, DNO d1, 10 kW) unless `register` is false. */
  issue(
    role: PartyRole,
    id: string,
    validity?: Validity,
    household?: Partial<Household> | false,
  ): Promise<IssuedFiles>;
  connect(role: PartyRole, id: string, opts?: mqtt.IClientOptions): Promise<MqttClient>;
  close(): Promise<void>;
}

export async function startTreFixture(
  opts: {
    revocationPollMs?: number;
    logLevel?: string;
    clock?: Clock;
    limits?: IdentityLimitOptions;
    handshakeTimeoutMs?: number;
    monitoring?: MonitoringOptions;
    demandResponse?: DemandResponseOptions;
    /** Where the TRE's JSON log lines go (default stderr). */
    logDestination?: NodeJS.WritableStream;
    /** A TPM behind this TCTI; the fixture's regulator CA certifies its attestation key. */
    tpmTcti?: string;
    /** Serve /metrics, /healthz and /readyz there (`tre.metrics.address` says the port for 0). */
    metrics?: { host: string; port: number };
  } = {},
): Promise<TreFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'tre-test-'));
  // The regulator's directory (ca.key, clients) and the TRE's (its certificate, the root, the CRL).
  const pkiDir = join(dir, 'pki');
  const treDir = join(dir, 'tre-pki');
  const { ca } = await CertificateAuthority.init(pkiDir);
  const measuredConfig = { fixture: true };
  await provisionTre(ca, {
    tcti: opts.tpmTcti,
    dataDir: join(dir, 'data'),
    pkiDir: treDir,
    treId: 'tre',
    hosts: [],
    config: measuredConfig,
    bootPcrs: [],
  });
  const log = createLogger({
    level: opts.logLevel ?? process.env.TRE_TEST_LOG_LEVEL ?? 'silent',
    destination: opts.logDestination,
  });
  const tre = await startTre({
    pkiDir: treDir,
    dataDir: join(dir, 'data'),
    port: 0,
    log,
    revocationPollMs: opts.revocationPollMs ?? 200,
    clock: opts.clock,
    limits: opts.limits,
    handshakeTimeoutMs: opts.handshakeTimeoutMs,
    monitoring: opts.monitoring,
    demandResponse: opts.demandResponse,
    metrics: opts.metrics,
    measuredConfig,
    tpm: opts.tpmTcti
      ? {
          tcti: opts.tpmTcti,
          akCertificate: (tpm) => endorseAk(tpm, ca, 'tre', { allowUncertifiedEk: true }),
        }
      : undefined,
  });
  const issued = new Map<string, IssuedFiles>();
  const clients = new Set<MqttClient>();
  const fixture: TreFixture = {
    dir,
    pkiDir,
    treDir,
    ca,
    tre,
    url: `mqtts://127.0.0.1:${tre.port}`,
    async issue(role, id, validity, household) {
      const files = await ca.issue(role, id, { validity, force: true });
      if (role === 'meter' && household !== false) {
        await tre.registry.upsert([
          {
            meterId: id,
            supplierId: 's1',
            dnoId: 'd1',
            capacityW: 10_000,
            account: `acc-${id}`,
            ...(household ?? {}),
          },
        ]);
      }
      issued.set(`${role}:${id}`, files);
      return files;
    },
    async connect(role, id, extra = {}) {
      const files = issued.get(`${role}:${id}`) ?? (await fixture.issue(role, id));
      const client = await connectWith(fixture.url, files, extra);
      clients.add(client);
      return client;
    },
    async close() {
      for (const c of clients) c.end(true);
      await tre.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return fixture;
}

export async function connectWith(
  url: string,
  files: IssuedFiles,
  extra: mqtt.IClientOptions = {},
): Promise<MqttClient> {
  const [key, cert, ca] = await Promise.all([readFile(files.key), readFile(files.cert), readFile(files.ca)]);
  const client = mqtt.connect(url, {
    key,
    cert,
    ca,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    rejectUnauthorized: true,
    ...extra,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', (err) => reject(err));
    client.once('close', () => reject(new Error('connection closed before CONNACK')));
  });
  return client;
}

/** Publishes QoS1 and reports whether the broker acknowledged it or closed the connection. */
export function publishOutcome(
  client: MqttClient,
  topic: string,
  payload: string | Buffer,
): Promise<'acked' | 'closed'> {
  return new Promise((resolve) => {
    const onClose = () => resolve('closed');
    client.once('close', onClose);
    client.publish(topic, payload, { qos: 1 }, (err) => {
      client.removeListener('close', onClose);
      resolve(err ? 'closed' : 'acked');
    });
  });
}

/** Subscribes and returns the granted QoS (128 = refused). */
export async function subscribeOutcome(client: MqttClient, filter: string): Promise<number> {
  try {
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    return granted[0]?.qos ?? -1;
  } catch (err) {
    // mqtt.js rejects when the SUBACK carries the failure code.
    if ((err as Error).name === 'ErrorWithSubackPacket' || /Subscribe error/.test((err as Error).message))
      return 128;
    throw err;
  }
}

/** Resolves with the next message on `filter` (subscribing first), or rejects after `ms`. */
export async function nextMessage(
  client: MqttClient,
  filter: string,
  ms = 5_000,
): Promise<{ topic: string; payload: Buffer }> {
  const wait = new Promise<{ topic: string; payload: Buffer }>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.removeListener('message', onMessage);
      reject(new Error(`no message on ${filter} within ${ms} ms`));
    }, ms);
    const onMessage = (topic: string, payload: Buffer) => {
      if (!matches(filter, topic)) return;
      clearTimeout(timer);
      client.removeListener('message', onMessage);
      resolve({ topic, payload });
    };
    client.on('message', onMessage);
  });
  await client.subscribeAsync(filter, { qos: 1 });
  return wait;
}

function matches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/**
 * The regulator registers households with a running TRE as in production: a registry update it
 * signs, sent over mTLS MQTT with its own certificate (issued here as `regulator` `r1`). Resolves
 * with the receipt once it came.
 */
export async function registerOverMqtt(
  url: string,
  ca: CertificateAuthority,
  households: Household[],
): Promise<Receipt> {
  const regulator = await ca.issue('regulator', 'r1', { force: true });
  const client = await connectWith(url, regulator);
  try {
    const receipts = topics.inbox({ role: 'regulator', id: 'r1' }, 'receipt');
    await client.subscribeAsync(receipts, { qos: 1 });
    const receipt = nextMessage(client, receipts, 30_000);
    const jws = await signContent(
      'registryUpdate',
      { v: PROTOCOL_VERSION, households, issuedAt: new Date().toISOString() },
      createPrivateKey(await readFile(regulator.key)),
    );
    await client.publishAsync(
      topics.registry('r1'),
      JSON.stringify({ v: PROTOCOL_VERSION, requestId: 'reg-1', jws }),
      { qos: 1 },
    );
    return JSON.parse((await receipt).payload.toString()) as Receipt;
  } finally {
    await client.endAsync(true);
  }
}
