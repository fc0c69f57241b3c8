/**
 * `shards`: what a cluster of TRE shards (issue 21) gives on this machine, measured against one
 * TRE process without a cluster in the same run, with the same load:
 *  - ingest: acknowledged (durable) QoS1 readings per second from meter clients over mutual TLS,
 *    each meter registered with a shard (round robin) and connected to that shard's endpoint;
 *  - attestation: attestation requests answered per second (each answer a TPM quote's evidence
 *    with the requester's Merkle proof), and the TPM quotes taken for them (distinct batch roots);
 *    one answer per endpoint is verified as an agent does.
 * Clusters of 1, 2 and 3 shard processes are started with `tre cluster` (a swtpm each, 3 NATS
 * servers); the baseline is `tre start` with a swtpm, enrolled like a real TRE (tpm-tre.ts). Every
 * TRE runs with `--log-level warn`. The load generator (this process) shares the machine's cores
 * with them. And the cross-shard DR round (shard-dr-round.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { TLSSocket } from 'node:tls';
import {
  type AttestationPolicy,
  attestationPolicySchema,
  attestationResponseSchema,
  type Household,
  PROTOCOL_VERSION,
  topics,
  verifyAttestation,
  verifyContent,
} from '@tre/protocol';
import { CertificateAuthority, type IssuedFiles } from '@tre/tre-broker';
import type { MqttClient } from 'mqtt';
import { connect, freePort, type LoadResult, reading, runLoad, treCli } from './load.js';
import type { BenchResult } from './report.js';
import { type DrRoundResult, runShardDrRound } from './shard-dr-round.js';
import { provisionAttestedTre, registerOverMqtt } from './tpm-tre.js';

export interface ShardsOptions {
  /** Shard counts to measure (default 1, 2, 3). */
  shardCounts: number[];
  meters: number;
  perMeter: number;
  window: number;
  /** How long the attestation load runs per configuration. */
  attestSeconds: number;
  /** Bid counts of the DR round (single TRE and `drShards` shards); empty: no DR round. */
  drBids: number[];
  drShards: number;
}

export const DEFAULT_SHARDS: ShardsOptions = {
  shardCounts: [1, 2, 3],
  meters: 120,
  perMeter: 250,
  window: 4,
  attestSeconds: 8,
  drBids: [10_000, 100_000],
  drShards: 3,
};

/** Measured `tre start` options of every TRE here (the baseline's too, tpm-tre.ts). */
const TRE_ARGS = ['--log-level', 'warn'];

interface Measured {
  label: string;
  /** The TREs' error log lines during the run, by message (count). */
  errors: Map<string, number>;
  processes: number;
  ingest: LoadResult;
  attest: AttestResult;
}

interface AttestResult {
  answered: number;
  perSecond: number;
  quotes: number;
  quotesPerSecond: number;
  verified: string;
  /** Requests answered `unavailable` (the TRE's TPM quote failed). */
  unavailable: number;
}

/** A running `tre cluster`, its summary (`--json`). */
interface ClusterProcess {
  summary: {
    shards: { name: string; url: string; pid: number }[];
    regulatorDir: string;
    caFile: string;
    crlFile: string;
    policyFile: string;
  };
  /** The shards' forwarded log lines (warn and above, `[sN] LEVEL message ...`). */
  log(): string[];
  stop(): Promise<void>;
}

/** Error lines (pino JSON at level 50+, or `tre cluster`'s `[sN] ERROR`), counted by message. */
function errorLines(lines: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of lines) {
    let message: string | undefined;
    const forwarded = /^\[(s\d+)\] (?:ERROR|FATAL) (.*)$/.exec(line);
    if (forwarded) message = `${forwarded[1]}: ${forwarded[2]}`;
    else if (line.startsWith('{')) {
      const entry = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
      if ((entry.level ?? 0) >= 50)
        message = `${entry.msg}${entry.err ? ` (${typeof entry.err === 'string' ? entry.err : JSON.stringify(entry.err)})` : ''}`;
    }
    if (message) counts.set(message, (counts.get(message) ?? 0) + 1);
  }
  return counts;
}

async function startCluster(
  dir: string,
  shards: number,
  progress: (l: string) => void,
): Promise<ClusterProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      treCli,
      'cluster',
      '--dir',
      dir,
      '--shards',
      String(shards),
      '--log-level',
      'warn',
      '--json',
      '--',
      ...TRE_ARGS,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  const tail: string[] = [];
  const shardLog: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    if (/^\[s\d+\] /.test(line)) shardLog.push(line);
    tail.push(line);
    if (tail.length > 30) tail.shift();
    if (line.startsWith('tre cluster: ')) progress(`  ${line.slice('tre cluster: '.length)}`);
    else if (/^\[s\d+\] (WARN|ERROR|FATAL) /.test(line)) progress(`  ${line}`);
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const killGroup = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  };
  const summary = await new Promise<ClusterProcess['summary']>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`tre cluster did not start in 5 min:\n${tail.join('\n')}`)),
      300_000,
    );
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line) as ClusterProcess['summary']);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`tre cluster exited (${code}) while starting:\n${tail.join('\n')}`));
    });
  }).catch((err: Error) => {
    killGroup();
    throw err;
  });
  let stopping: Promise<void> | undefined;
  return {
    summary,
    log: () => shardLog,
    stop() {
      stopping ??= (async () => {
        child.kill('SIGINT');
        const timer = setTimeout(killGroup, 60_000);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

const householdsFor = (n: number, shards?: string[]): Household[] =>
  Array.from({ length: n }, (_, m) => ({
    meterId: `b${m}`,
    supplierId: 's1',
    dnoId: 'd1',
    capacityW: 10_000,
    account: `a${m}`,
    ...(shards ? { shard: shards[m % shards.length]! } : {}),
  }));

async function issueMeters(ca: CertificateAuthority, n: number): Promise<IssuedFiles[]> {
  const files: IssuedFiles[] = [];
  for (let m = 0; m < n; m++) files.push(await ca.issue('meter', `b${m}`, { force: true }));
  return files;
}

/** Connects meter `m` to `urlOf(m)`, retrying while its shard has not yet been told it is registered. */
async function connectAll(files: IssuedFiles[], urlOf: (m: number) => string): Promise<MqttClient[]> {
  return Promise.all(
    files.map(async (f, m) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await connect(urlOf(m), f, `b${m}-${attempt}`);
        } catch (err) {
          if (attempt >= 60)
            throw new Error(`meter b${m} cannot connect to ${urlOf(m)}: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }),
  );
}

async function ingest(clients: MqttClient[], o: ShardsOptions): Promise<LoadResult> {
  const warmup = Math.max(1, Math.floor(o.perMeter / 10));
  return runLoad(
    clients.map((client, m) => ({ client, topic: topics.reading(`b${m}`) })),
    o.perMeter,
    o.window,
    warmup,
    (_c, i) => reading(i),
  );
}

/**
 * Each client keeps one attestation request in flight for `seconds` (after one unmeasured round);
 * counts the answers that arrive in that time and their distinct batch roots (one per TPM quote).
 * The first answer of each endpoint is verified in full, as an agent does.
 */
async function attest(
  clients: MqttClient[],
  urls: string[],
  seconds: number,
  trust: { policy: AttestationPolicy; root: X509Certificate; crl: string },
): Promise<AttestResult> {
  const roots = new Set<string>();
  const verifiedUrls = new Map<string, boolean>();
  let answered = 0;
  /** Answers saying the TPM quote failed (`unavailable`), in the warm-up too. */
  let unavailable = 0;
  let measuring = false;
  let stopAt = Number.POSITIVE_INFINITY;
  const one = async (client: MqttClient, m: number, n: number) => {
    const who = { role: 'meter' as const, id: `b${m}` };
    const requestId = `att-${m}-${n}`;
    const nonce = randomBytes(32);
    const inbox = topics.inbox(who, 'attestation');
    const answer = new Promise<Buffer>((resolve) => {
      const onMessage = (topic: string, payload: Buffer) => {
        if (topic !== inbox || !payload.includes(requestId)) return;
        client.removeListener('message', onMessage);
        resolve(payload);
      };
      client.on('message', onMessage);
    });
    await client.publishAsync(
      topics.attest(who),
      JSON.stringify({ v: PROTOCOL_VERSION, requestId, nonce: nonce.toString('base64url') }),
      { qos: 1 },
    );
    const response = attestationResponseSchema.parse(JSON.parse((await answer).toString()));
    if (response.status !== 'ok' || !response.evidence) {
      unavailable++;
      return;
    }
    if (measuring && performance.now() <= stopAt) {
      answered++;
      roots.add(response.evidence.batch?.root ?? response.evidence.signature);
    }
    const url = urls[m]!;
    if (!verifiedUrls.has(url)) {
      verifiedUrls.set(url, false);
      const peer = (client.stream as TLSSocket).getPeerX509Certificate();
      const verdict = await verifyAttestation({
        nonce,
        evidence: response.evidence,
        regulatorRoot: trust.root,
        regulatorCrl: trust.crl,
        treCertificate: peer!,
        policy: trust.policy,
        now: new Date(),
      });
      verifiedUrls.set(url, verdict.trusted);
      if (!verdict.trusted)
        throw new Error(`${url}: an agent would not trust this answer (${verdict.reason})`);
    }
  };
  await Promise.all(
    clients.map(async (c, m) => {
      await c.subscribeAsync(topics.inbox({ role: 'meter', id: `b${m}` }, 'attestation'), { qos: 1 });
      await one(c, m, 0); // warm-up: subscriptions, first quote
    }),
  );
  measuring = true;
  const start = performance.now();
  stopAt = start + seconds * 1000;
  await Promise.all(
    clients.map(async (c, m) => {
      for (let n = 1; performance.now() < stopAt; n++) await one(c, m, n);
    }),
  );
  const elapsed = Math.min(performance.now(), stopAt) - start;
  const verified = [...verifiedUrls.values()].filter(Boolean).length;
  return {
    answered,
    perSecond: answered / (elapsed / 1000),
    quotes: roots.size,
    quotesPerSecond: roots.size / (elapsed / 1000),
    verified: `${verified}/${verifiedUrls.size} endpoints`,
    unavailable,
  };
}

async function trustOf(caFile: string, crlFile: string, policyJws: string) {
  const caPem = await readFile(caFile, 'utf8');
  const root = new X509Certificate(caPem);
  return {
    root,
    crl: await readFile(crlFile, 'utf8'),
    policy: await verifyContent(
      'attestationPolicy',
      policyJws.trim(),
      root.publicKey,
      attestationPolicySchema,
    ),
  };
}

async function measure(
  clientsFor: () => Promise<MqttClient[]>,
  urls: string[],
  trust: Awaited<ReturnType<typeof trustOf>>,
  o: ShardsOptions,
  progress: (l: string) => void,
): Promise<{ ingest: LoadResult; attest: AttestResult }> {
  let clients = await clientsFor();
  progress(`  ingest: ${o.meters} meters x ${o.perMeter} readings`);
  const ingested = await ingest(clients, o);
  await Promise.all(clients.map((c) => c.endAsync(true)));
  clients = await clientsFor();
  progress(`  attestation: ${clients.length} requesters for ${o.attestSeconds} s`);
  const attested = await attest(clients, urls, o.attestSeconds, trust);
  await Promise.all(clients.map((c) => c.endAsync(true)));
  progress(
    `  ${ingested.perSecond.toFixed(0)} readings/s, ${attested.perSecond.toFixed(0)} attestations/s (${attested.quotesPerSecond.toFixed(1)} quotes/s)`,
  );
  return { ingest: ingested, attest: attested };
}

async function singleTre(dir: string, o: ShardsOptions, progress: (l: string) => void): Promise<Measured> {
  progress('single TRE (no cluster): enrolling it on a swtpm, as `tre enroll` does');
  const { ca } = await CertificateAuthority.init(join(dir, 'regulator'));
  const tre = await provisionAttestedTre(ca, join(dir, 'tre'));
  try {
    const port = await freePort();
    const running = await tre.start(port);
    try {
      const url = `mqtts://127.0.0.1:${port}`;
      await registerOverMqtt(ca, url, householdsFor(o.meters));
      const files = await issueMeters(ca, o.meters);
      const trust = await trustOf(ca.paths.caCert, ca.paths.crl, tre.policyJws);
      const urls = files.map(() => url);
      const r = await measure(() => connectAll(files, () => url), urls, trust, o, progress);
      await running.stop();
      return {
        label: 'single TRE (no cluster)',
        processes: 1,
        errors: errorLines(running.log().split('\n')),
        ...r,
      };
    } finally {
      await running.stop();
    }
  } finally {
    await tre.swtpm.stop();
  }
}

async function cluster(
  dir: string,
  k: number,
  o: ShardsOptions,
  progress: (l: string) => void,
): Promise<Measured> {
  progress(`${k} shard${k > 1 ? 's' : ''}: tre cluster --shards ${k}`);
  const running = await startCluster(dir, k, progress);
  try {
    const { summary } = running;
    const ca = await CertificateAuthority.open(summary.regulatorDir);
    const names = summary.shards.map((s) => s.name);
    // Registered at s1, which passes the update on to the other shards.
    await registerOverMqtt(ca, summary.shards[0]!.url, householdsFor(o.meters, names));
    const files = await issueMeters(ca, o.meters);
    const urls = files.map((_, m) => summary.shards[m % k]!.url);
    const trust = await trustOf(summary.caFile, summary.crlFile, await readFile(summary.policyFile, 'utf8'));
    const r = await measure(() => connectAll(files, (m) => urls[m]!), urls, trust, o, progress);
    await running.stop();
    return { label: `${k} shard${k > 1 ? 's' : ''}`, processes: k, errors: errorLines(running.log()), ...r };
  } finally {
    await running.stop();
  }
}

export async function runShards(
  o: ShardsOptions,
  progress: (l: string) => void = () => {},
): Promise<BenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-shards-'));
  const measured: Measured[] = [];
  const dr: DrRoundResult[] = [];
  try {
    measured.push(await singleTre(join(dir, 'single'), o, progress));
    for (const k of o.shardCounts) measured.push(await cluster(join(dir, `cluster-${k}`), k, o, progress));
    for (const bids of o.drBids) {
      dr.push(await runShardDrRound({ bids, shards: 0, dir: join(dir, `dr-single-${bids}`) }, progress));
      dr.push(
        await runShardDrRound(
          { bids, shards: o.drShards, dir: join(dir, `dr-${o.drShards}-${bids}`) },
          progress,
        ),
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const base = measured[0]!;
  const rows: (string | number)[][] = measured.map((m) => [
    m.label,
    m.ingest.perSecond,
    m.ingest.perSecond / base.ingest.perSecond,
    m.ingest.p50ms,
    m.ingest.p99ms,
    m.attest.perSecond,
    m.attest.perSecond / base.attest.perSecond,
    m.attest.quotesPerSecond,
    m.attest.answered / Math.max(1, m.attest.quotes),
    m.attest.verified,
    m.attest.unavailable,
  ]);
  const cores = cpus().length;
  return {
    name: 'shards',
    description: `TRE shard processes (tre cluster: swtpm each, 3 NATS servers) vs one TRE process without a cluster (swtpm), same run: ingest ${o.meters} meters x ${o.perMeter} QoS1 readings (window ${o.window}) spread over the shards' endpoints, and attestation requests answered over ${o.attestSeconds} s with one in flight per meter`,
    columns: [
      'TRE processes',
      'readings/s',
      'readings vs single',
      'p50 ms',
      'p99 ms',
      'attestations/s',
      'attestations vs single',
      'quotes/s',
      'answers per quote',
      'verified',
      'unavailable',
    ],
    rows,
    summary: Object.fromEntries([
      ...measured.map((m) => [
        `readingsPerSecond${m.processes}${m === base ? 'Single' : 'Shards'}`,
        m.ingest.perSecond,
      ]),
      ...measured.map((m) => [
        `attestationsPerSecond${m.processes}${m === base ? 'Single' : 'Shards'}`,
        m.attest.perSecond,
      ]),
      ...dr
        .filter((d) => d.ms !== undefined)
        .map((d) => [`drRound${d.bids}Bids${d.shards || 'Single'}Ms`, d.ms!]),
    ]),
    notes: [
      `machine: ${cores} cores; the shards, the NATS servers, the swtpms and this load generator share them${cores <= 2 ? ': with 2 cores, more shard processes cannot run in parallel, so the curve flattens (or falls) after the first' : ''}`,
      "ingest: the PUBACK comes after the reading is committed to the shard's encrypted SQLite store (WAL, synchronous=FULL); a shard only takes readings of its own meters",
      'attestation: nonces arriving within 20 ms share one TPM quote (Merkle batch); each answer carries the full event log; one answer per endpoint verified as an agent does (AK chain, quote, PCRs, whitelist)',
      ...measured.flatMap((m) =>
        [...m.errors].map(([message, n]) => `${m.label}: ${n} x error logged: ${message}`),
      ),
      ...dr.map(drNote),
    ],
  };
}

function drNote(d: DrRoundResult): string {
  const who = d.shards ? `${d.shards} shards` : 'single TRE';
  const n = (x: number) => x.toLocaleString('en-US');
  const head = `DR round, ${n(d.bids)} bids, ${who}:`;
  const outcome =
    d.ms !== undefined
      ? `deadline -> DSM received the union (all bids, ${Math.round(d.unionBytes / 1024)} KiB) in ${d.ms.toFixed(0)} ms`
      : d.received > 0
        ? `NO complete union: after the gateway's grace the DSM got ${n(d.received)} of ${n(d.bids)} bids (${Math.round(d.unionBytes / 1024)} KiB)`
        : 'NO union reached the DSM';
  const details = [
    outcome,
    d.batches && `bid batches: ${d.batches}`,
    d.failure && `errors logged: ${d.failure}`,
  ];
  return `${head} ${details.filter(Boolean).join('; ')}`;
}
