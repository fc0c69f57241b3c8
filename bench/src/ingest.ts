/**
 * `ingest`: durable QoS1 readings per second over mTLS from many meter connections, with p50/p99
 * publish-to-PUBACK latency. Baseline, same run, same PKI, same client load: Debian mosquitto
 * relaying the same stream to one subscriber (in memory, no persistence). The TRE commits every
 * reading to SQLite (WAL, synchronous=FULL, group commit) before its PUBACK. Every meter connection
 * subscribes to its own inbox first, as the meter agent does, so whatever the TRE answers besides the
 * PUBACK (refusal receipts) is delivered and counted. With `TRE_BENCH_PROFILE_OUT=<dir>` the TRE's
 * `.cpuprofile` is copied there (for a look at functions, not only components).
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { topics } from '@tre/protocol';
import {
  CertificateAuthority,
  developmentDataKeyFile,
  ReadingStore,
  registerHouseholds,
  Store,
} from '@tre/tre-broker';
import type { MqttClient } from 'mqtt';
import { summariseProfile } from './cpu-profile.js';
import { connect, freePort, type LoadResult, reading, runLoad, spawnTre } from './load.js';
import { startMosquitto } from './mosquitto.js';
import type { BenchResult } from './report.js';

export interface IngestOptions {
  meters: number;
  perMeter: number;
  window: number;
}

export async function runIngest(
  opts: IngestOptions,
  progress: (line: string) => void = () => {},
): Promise<BenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-ingest-'));
  try {
    const pki = join(dir, 'pki');
    const { ca, tre } = await CertificateAuthority.initForDevelopment(pki);
    const files = [];
    progress(`issuing ${opts.meters} meter certificates`);
    for (let m = 0; m < opts.meters; m++) files.push(await ca.issue('meter', `b${m}`));
    await registerHouseholds(
      join(dir, 'data'),
      files.map((_, m) => ({
        meterId: `b${m}`,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 10_000,
        account: `a${m}`,
      })),
    );
    const warmup = Math.max(1, Math.floor(opts.perMeter / 10));

    progress('TRE: durable ingest');
    const trePort = await freePort();
    const profileDir = join(dir, 'profile');
    const treProcess = await spawnTre(pki, join(dir, 'data'), trePort, profileDir);
    const treClients = await Promise.all(files.map((f) => connect(`mqtts://127.0.0.1:${trePort}`, f)));
    const treInbox = await countInbox(treClients);
    const treResult = await runLoad(
      treClients.map((client, m) => ({ client, topic: topics.reading(`b${m}`) })),
      opts.perMeter,
      opts.window,
      warmup,
      (_c, i) => reading(i),
    );
    await closeAll(treClients);
    await treProcess.stop();
    const profileFile = (await readdir(profileDir)).find((f) => f.endsWith('.cpuprofile'));
    const profile = profileFile ? summariseProfile(join(profileDir, profileFile)) : [];
    const keepProfile = process.env.TRE_BENCH_PROFILE_OUT;
    if (profileFile && keepProfile) {
      await mkdir(keepProfile, { recursive: true });
      await copyFile(join(profileDir, profileFile), join(keepProfile, `ingest-tre-${Date.now()}.cpuprofile`));
    }
    // The TRE's store is encrypted; a development TRE (no TPM) keeps its key in the data directory.
    const dataKey = await readFile(developmentDataKeyFile(join(dir, 'data')));
    const check = Store.openIn(join(dir, 'data'), { dataKey });
    const committed = ReadingStore.open(check).countInBounds();
    check.close();

    progress('mosquitto: relay to one subscriber');
    const mqPort = await freePort();
    const mosquitto = await startMosquitto(dir, tre, mqPort);
    const sink = await connect(`mqtts://127.0.0.1:${mqPort}`, await ca.issue('dno', 'sink'));
    let relayed = 0;
    sink.on('message', () => relayed++);
    await sink.subscribeAsync(topics.everyReadingFilter, { qos: 1 });
    const mqClients = await Promise.all(
      files.map((f, m) => connect(`mqtts://127.0.0.1:${mqPort}`, f, `mq-b${m}`)),
    );
    const mqInbox = await countInbox(mqClients);
    const mqResult = await runLoad(
      mqClients.map((client, m) => ({ client, topic: topics.reading(`b${m}`) })),
      opts.perMeter,
      opts.window,
      warmup,
      (_c, i) => reading(i),
    );
    await closeAll([...mqClients, sink]);
    await mosquitto.stop();

    const row = (name: string, r: LoadResult) => [name, r.messages, r.seconds, r.perSecond, r.p50ms, r.p99ms];
    return {
      name: 'ingest',
      description: `${opts.meters} meters x ${opts.perMeter} QoS1 readings (window ${opts.window}, ${warmup} warm-up each) over mutual TLS`,
      columns: ['broker', 'messages', 'seconds', 'msg/s', 'p50 ms', 'p99 ms'],
      rows: [
        row('TRE (durable: SQLite WAL fsync before PUBACK)', treResult),
        row('mosquitto (in-memory relay, baseline)', mqResult),
      ],
      notes: [
        `ratio TRE / mosquitto throughput: ${(treResult.perSecond / mqResult.perSecond).toFixed(2)}`,
        `TRE CPU profile (self time, whole run incl. start-up): ${profile.map((p) => `${p.component} ${(100 * p.share).toFixed(0)} %`).join(', ')}`,
        `TRE committed ${committed} readings (warm-up included) to SQLite; mosquitto relayed ${relayed} to its subscriber`,
        `messages to the meters' inboxes besides the PUBACKs: TRE ${treInbox()}, mosquitto ${mqInbox()}`,
      ],
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Subscribes each meter connection to its own inbox (as the agent does); returns a counter of what arrives. */
async function countInbox(clients: MqttClient[]): Promise<() => number> {
  let n = 0;
  await Promise.all(
    clients.map((c, m) => {
      c.on('message', () => n++);
      return c.subscribeAsync(topics.inboxFilter({ role: 'meter', id: `b${m}` }), { qos: 1 });
    }),
  );
  return () => n;
}

async function closeAll(clients: MqttClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.endAsync(true)));
}
