/**
 * A demand-response round over shards, for `tre-bench shards`: the time from the bid deadline to
 * the DSM (a real MQTT client over mutual TLS, connected to s1, the round's gateway) receiving the
 * one shuffled union of every shard's bids. The shards are TREs in this process (the flows need a
 * shared clock to reach the deadline at once), each on its own swtpm, attested to each other over
 * a real 3-node NATS cluster; the baseline is one TRE without a cluster, same bids, same DSM.
 *
 * Set-up, outside the timing: the households go into each TRE's registry directly
 * (`registry.upsert`, every household naming its shard round robin), the DSM's signed event
 * arrives over MQTT at s1 and is replicated, and each bid is routed through its own shard's flows
 * (`router.route` as the meter: admission, pseudonym, commit), not over MQTT.
 *
 * At the deadline every shard shuffles its bids and sends them to the gateway as one sealed
 * message over NATS. A batch larger than the servers' max_payload cannot be sent: that is
 * reported as it happens (the shard's error log line, the batch's size), and the gateway is then
 * let run out its grace, releasing what it has.
 */
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { type Swtpm, startSwtpm, Tpm } from '@tre/hardware';
import {
  type AttestationPolicy,
  type Household,
  ManualClock,
  type ParsedTopic,
  PROTOCOL_VERSION,
  parseTopic,
  signContent,
  topics,
} from '@tre/protocol';
import {
  APPLICATION_PCR,
  adminUser,
  attestationPolicyFor,
  CertificateAuthority,
  createLogger,
  endorseAk,
  type NatsCluster,
  provisionTre,
  type RunningTre,
  shardUser,
  startNatsCluster,
  startTre,
} from '@tre/tre-broker';
import type { MqttClient } from 'mqtt';
import { connect } from './load.js';

export interface DrRoundResult {
  bids: number;
  /** 0: one TRE without a cluster. */
  shards: number;
  /** Deadline to the DSM holding the union; undefined when no complete union came. */
  ms?: number;
  /** Bids in the union the DSM received (after the grace, when a batch failed). */
  received: number;
  unionBytes: number;
  /** Per shard: its bids and batch size, as sent to the gateway. */
  batches?: string;
  /** What went wrong, as the shards logged it. */
  failure?: string;
}

/** What every TRE here measures (and the whitelist names): a shard is measured as one. */
const CONFIG = { bench: 'shard-dr-round', cluster: true };
const MIN = 60_000;
/** How long the gateway waits for late shards, in (manual) clock time. */
const GRACE_MS = 10 * MIN;
/** How long to wait in real time for the union before the grace is let run out. */
const UNION_TIMEOUT_MS = 180_000;

interface Tres {
  tres: RunningTre[];
  names: string[];
  ca: CertificateAuthority;
  /** The TREs' warn and error log lines. */
  log: LogLines;
  stop(): Promise<void>;
}

/** The TREs' warn and error lines, kept (nothing printed); `onError` hears each error as it comes. */
class LogLines {
  readonly lines: string[] = [];
  onError: (line: string) => void = () => {};

  logger() {
    return createLogger({
      level: 'warn',
      destination: new Writable({
        write: (chunk, _enc, done) => {
          for (const line of String(chunk).split('\n'))
            if (line.trim()) {
              this.lines.push(line);
              if (/"level":(50|60)/.test(line)) this.onError(line);
            }
          done();
        },
      }),
    });
  }

  /** The error lines from `from` on, by message and count. */
  errorsSince(from: number): string | undefined {
    const counts = new Map<string, number>();
    for (const line of this.lines.slice(from)) {
      const e = JSON.parse(line) as { level: number; msg: string; err?: string };
      if (e.level < 50) continue;
      const key = `${e.msg}${e.err ? ` (${e.err})` : ''}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts.size ? [...counts].map(([m, n]) => `${n} x ${m}`).join('; ') : undefined;
  }
}

async function singleTre(dir: string, clock: ManualClock): Promise<Tres> {
  const pkiDir = join(dir, 'pki');
  const { ca } = await CertificateAuthority.initForDevelopment(pkiDir);
  const log = new LogLines();
  const tre = await startTre({
    pkiDir,
    dataDir: join(dir, 'data'),
    port: 0,
    log: log.logger(),
    clock,
  });
  return { tres: [tre], names: ['tre'], ca, log, stop: () => tre.stop() };
}

/** `k` shards in this process: swtpm each, keys sealed, AKs endorsed, one whitelist, a NATS cluster. */
async function shardTres(
  dir: string,
  k: number,
  clock: ManualClock,
  progress: (l: string) => void,
): Promise<Tres> {
  const { ca } = await CertificateAuthority.init(join(dir, 'regulator'));
  const names = Array.from({ length: k }, (_, i) => `s${i + 1}`);
  const log = new LogLines();
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.splice(0).reverse()) await s().catch(() => {});
  };
  try {
    const swtpms: Swtpm[] = [];
    for (const name of names) {
      const swtpm = await startSwtpm({ dir: join(dir, name, 'swtpm') });
      stops.push(() => swtpm.stop());
      swtpms.push(swtpm);
    }
    const base = (name: string) => ({ pkiDir: join(dir, name, 'pki'), dataDir: join(dir, name, 'data') });
    progress(`  ${k} shards: keys sealed on swtpm, one whitelist, 3 NATS servers`);
    for (const [i, name] of names.entries())
      await provisionTre(ca, {
        tcti: swtpms[i]!.tcti,
        ...base(name),
        treId: name,
        hosts: [],
        config: CONFIG,
        bootPcrs: [],
      });
    // With a TPM open: this process then maps what each TRE maps when it measures (the TCTI too).
    const tpm = Tpm.open({ tcti: swtpms[0]!.tcti, keystoreDir: join(base('s1').dataDir, 'tpm') });
    let policy: AttestationPolicy;
    try {
      policy = attestationPolicyFor(CONFIG, { policyId: 'bench-shards' });
    } finally {
      tpm.close();
    }
    const nats = await natsFor(ca, dir, names);
    stops.push(() => nats.stop());
    const tres: RunningTre[] = [];
    for (const [i, name] of names.entries()) {
      const tre = await startTre({
        ...base(name),
        port: 0,
        log: log.logger(),
        clock,
        measuredConfig: CONFIG,
        tpm: {
          tcti: swtpms[i]!.tcti,
          akCertificate: (t) => endorseAk(t, ca, name, { allowUncertifiedEk: true }),
        },
        cluster: { shard: name, shards: names, servers: nats.urls, peerPolicy: policy },
        demandResponse: { shardGraceMs: GRACE_MS },
      });
      stops.push(() => tre.stop());
      tres.push(tre);
      const pcr = policy.pcrValues[String(APPLICATION_PCR)]![0];
      if (tre.attestation?.pcr !== pcr)
        throw new Error(
          `shard ${name} measures PCR 23 ${tre.attestation?.pcr} but the whitelist names ${pcr}: something was mapped into this process, or rebuilt, between the two`,
        );
    }
    return { tres, names, ca, log, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function natsFor(ca: CertificateAuthority, dir: string, names: string[]): Promise<NatsCluster> {
  const tlsDir = join(dir, 'nats-tls');
  await mkdir(tlsDir, { recursive: true });
  const server = await ca.issueNatsServer();
  await writeFile(join(tlsDir, 'nats.crt'), server.cert);
  await writeFile(join(tlsDir, 'nats.key'), server.key, { mode: 0o600 });
  return startNatsCluster({
    dir: join(dir, 'nats'),
    tls: { caFile: ca.paths.caCert, certFile: join(tlsDir, 'nats.crt'), keyFile: join(tlsDir, 'nats.key') },
    users: [...names.map(shardUser), adminUser('reg')],
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `promise`, or undefined after `ms` (the timer does not outlive it). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the next message on `topic` that `client` receives; its arrival time too. */
function nextOn(client: MqttClient, topic: string) {
  return new Promise<{ at: number; payload: Buffer }>((resolve) => {
    const onMessage = (t: string, payload: Buffer) => {
      if (t !== topic) return;
      client.removeListener('message', onMessage);
      resolve({ at: performance.now(), payload });
    };
    client.on('message', onMessage);
  });
}

/** Size of a JSON body sealed for another shard, as sealed-envelope.ts builds it (JWS, padded to 64 KiB steps, JWE). */
function sealedBytes(bodyBytes: number): number {
  const jws = Math.ceil(((bodyBytes + 200) * 4) / 3) + 200;
  const padded =
    jws <= 65_536 ? 2 ** Math.ceil(Math.log2(Math.max(1, jws))) : Math.ceil(jws / 65_536) * 65_536;
  return Math.ceil((padded * 4) / 3) + 300;
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(2)} MiB`;

export async function runShardDrRound(
  o: { bids: number; shards: number; dir: string },
  progress: (l: string) => void = () => {},
): Promise<DrRoundResult> {
  const who = o.shards ? `${o.shards} shards` : 'single TRE';
  progress(`DR round, ${o.bids} bids, ${who}: setting up`);
  const clock = new ManualClock(Date.now());
  const t = await (o.shards ? shardTres(o.dir, o.shards, clock, progress) : singleTre(o.dir, clock));
  let dsm: MqttClient | undefined;
  try {
    const { tres, names, ca } = t;
    const households: Household[] = Array.from({ length: o.bids }, (_, i) => ({
      meterId: `h${i}`,
      supplierId: 's',
      dnoId: 'd',
      capacityW: 8_000,
      account: `a${i}`,
      ...(o.shards ? { shard: names[i % o.shards]! } : {}),
    }));
    for (const tre of tres) await tre.registry.upsert(households);

    // The DSM, connected to the first TRE (the gateway), raises the event.
    const dsmFiles = await ca.issue('dsm', 'x1', { force: true });
    dsm = await connect(`mqtts://127.0.0.1:${tres[0]!.port}`, dsmFiles);
    const bidsTopic = topics.pseudoBids('x1', 'e1');
    const receipts = topics.inbox({ role: 'dsm', id: 'x1' }, 'receipt');
    await dsm.subscribeAsync([bidsTopic, receipts], { qos: 1 });
    const now = clock.now();
    const event = {
      v: PROTOCOL_VERSION,
      eventId: 'e1',
      dsmId: 'x1',
      windowStart: new Date(now + 60 * MIN).toISOString(),
      windowEnd: new Date(now + 120 * MIN).toISOString(),
      bidDeadline: new Date(now + 10 * MIN).toISOString(),
      acceptBy: new Date(now + 40 * MIN).toISOString(),
      requestedReductionWh: 1,
      priceCapPerMWh: 1_000_000,
    };
    const receipt = nextOn(dsm, receipts);
    const privateKey = createPrivateKey(await readFile(dsmFiles.key));
    await dsm.publishAsync(
      topics.drEvent('x1'),
      JSON.stringify({
        v: PROTOCOL_VERSION,
        requestId: 'ev-1',
        jws: await signContent('drEvent', event, privateKey),
      }),
      { qos: 1 },
    );
    const r = JSON.parse((await receipt).payload.toString()) as { status: string; message?: string };
    if (r.status !== 'accepted') throw new Error(`the TRE refused the DSM's event: ${r.message}`);

    progress(`DR round, ${o.bids} bids, ${who}: routing the bids through each shard's flows`);
    const meterKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    const bid = async (i: number, retryUnknownEvent: boolean) => {
      const id = `h${i}`;
      const tre = tres[o.shards ? i % o.shards : 0]!;
      for (let attempt = 0; ; attempt++) {
        const result = await tre.router.route({
          from: { role: 'meter', id, serial: '1', publicKey: meterKey },
          topic: parseTopic(topics.bid(id)) as Extract<ParsedTopic, { scope: 'party' }>,
          payload: Buffer.from(
            JSON.stringify({
              v: PROTOCOL_VERSION,
              requestId: `bid-req-${i}`,
              bidId: `bid-${String(i).padStart(8, '0')}`,
              eventId: 'e1',
              quantityWh: 100 + (i % 900),
              pricePerMWh: 1_000 + (i % 5_000),
            }),
          ),
        });
        if (result?.status === 'accepted') return;
        // The event reaches the other shards over NATS: their first bid may come before it.
        if (
          retryUnknownEvent &&
          result?.status === 'refused' &&
          result.reason === 'UNKNOWN_EVENT' &&
          attempt < 150
        ) {
          await sleep(200);
          continue;
        }
        throw new Error(`bid ${i} refused: ${JSON.stringify(result)}`);
      }
    };
    for (let i = 0; i < Math.min(o.bids, tres.length); i++) await bid(i, true);
    const CHUNK = 2_000;
    for (let from = tres.length; from < o.bids; from += CHUNK)
      await Promise.all(
        Array.from({ length: Math.min(CHUNK, o.bids - from) }, (_, j) => bid(from + j, false)),
      );

    progress(`DR round, ${o.bids} bids, ${who}: the deadline`);
    const union = nextOn(dsm, bidsTopic);
    const logFrom = t.log.lines.length;
    // A shard that cannot send its batch logs an error: the union cannot be complete then.
    const failed = new Promise<undefined>((resolve) => {
      t.log.onError = () => resolve(undefined);
    });
    const start = performance.now();
    clock.advance(Date.parse(event.bidDeadline) - clock.now());
    const inTime = await within(Promise.race([union, failed]), UNION_TIMEOUT_MS);
    let got = inTime;
    if (!got) {
      progress(
        `DR round, ${o.bids} bids, ${who}: a shard failed to send its batch; letting the gateway's grace run out`,
      );
      clock.advance(GRACE_MS);
      got = await within(union, 60_000);
    }
    await sleep(2_000); // what the shards log after the release (the union relayed to the other shards)
    t.log.onError = () => {};
    const failure = t.log.errorsSince(logFrom);
    const released = got ? (JSON.parse(got.payload.toString()) as { bids: unknown[] }).bids : [];
    const bidBytes = released.length ? JSON.stringify(released).length / released.length : 0;
    const maxPayload = tres[1]?.cluster?.nats.info?.max_payload;
    const batches = o.shards
      ? names
          .map((name, s) => {
            const count = households.filter((h) => h.shard === name).length;
            if (s === 0) return `${name} ${count.toLocaleString('en-US')} (the gateway: in process)`;
            const body = count * bidBytes + 40;
            return `${name} ${count.toLocaleString('en-US')} (body ${mib(body)}, sealed ≈ ${mib(sealedBytes(body))})`;
          })
          .join(', ') + (maxPayload ? `; NATS max_payload ${mib(maxPayload)}` : '')
      : undefined;
    const complete = inTime !== undefined && released.length === o.bids;
    const result: DrRoundResult = {
      bids: o.bids,
      shards: o.shards,
      ms: complete ? inTime.at - start : undefined,
      received: released.length,
      unionBytes: got?.payload.length ?? 0,
      batches,
      failure,
    };
    progress(
      `DR round, ${o.bids} bids, ${who}: ${complete ? `${result.ms!.toFixed(0)} ms` : 'incomplete'}${failure ? ` (${failure})` : ''}`,
    );
    return result;
  } finally {
    await dsm?.endAsync(true);
    await t.stop();
  }
}
