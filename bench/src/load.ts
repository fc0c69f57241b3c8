/** Shared load generation: meter connections over mTLS publishing QoS1 readings. */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { waitForListening } from '@tre/hardware';
import mqtt, { type MqttClient } from 'mqtt';
import { percentile } from './report.js';

export interface Files {
  key: string;
  cert: string;
  ca: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

export async function connect(url: string, files: Files, clientId?: string): Promise<MqttClient> {
  const [key, cert, ca] = await Promise.all([readFile(files.key), readFile(files.cert), readFile(files.ca)]);
  const client = mqtt.connect(url, {
    key,
    cert,
    ca,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 30_000,
    clientId,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

export interface LoadResult {
  messages: number;
  seconds: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
}

/**
 * Each client publishes `perClient` messages (from `message(client, i)`) with up to `window` QoS1
 * publishes in flight; latency is publish call to PUBACK. The first `warmup` messages of each client
 * are sent but not measured.
 */
export async function runLoad(
  clients: { client: MqttClient; topic: string }[],
  perClient: number,
  window: number,
  warmup: number,
  message: (clientIndex: number, i: number) => string,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let measuredStart = 0;
  let measured = 0;
  const warm = Promise.all(
    clients.map(({ client, topic }, c) =>
      Promise.all(
        Array.from({ length: warmup }, (_, i) => client.publishAsync(topic, message(c, i), { qos: 1 })),
      ),
    ),
  );
  await warm;
  measuredStart = performance.now();
  await Promise.all(
    clients.map(async ({ client, topic }, c) => {
      let next = warmup;
      const worker = async () => {
        while (next < warmup + perClient) {
          const i = next++;
          const t0 = performance.now();
          await client.publishAsync(topic, message(c, i), { qos: 1 });
          latencies.push(performance.now() - t0);
          measured++;
        }
      };
      await Promise.all(Array.from({ length: window }, worker));
    }),
  );
  const seconds = (performance.now() - measuredStart) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    messages: measured,
    seconds,
    perSecond: measured / seconds,
    p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99),
  };
}

export const treCli = fileURLToPath(new URL('../../tre-broker/dist/cli.js', import.meta.url));

/** Node's own flags for a TRE process: `--cpu-prof` into `profileDir` if given (they are part of its measurement). */
export function treExecArgv(profileDir?: string): string[] {
  return profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
}

/**
 * Starts `tre start` as a child process (with `--cpu-prof` into `profileDir` if given) and resolves
 * when it listens. `extra.args` go after the usual options (e.g. `--tpm <tcti>`), `extra.execArgv`
 * are more Node flags (e.g. `--heapsnapshot-signal`); `extra.timeoutMs`
 * bounds the wait for it to listen (default 15 s; a measured start hashes the whole release);
 * `extra.cli` runs another copy of the TRE's CLI (a snapshot of the release).
 */
export async function spawnTre(
  pkiDir: string,
  dataDir: string,
  port: number,
  profileDir?: string,
  extra: { args?: string[]; timeoutMs?: number; cli?: string; execArgv?: string[] } = {},
) {
  const child = spawn(
    process.execPath,
    [
      ...treExecArgv(profileDir),
      ...(extra.execArgv ?? []),
      extra.cli ?? treCli,
      'start',
      '--pki',
      pkiDir,
      '--data',
      dataDir,
      '--port',
      String(port),
      '--log-level',
      'warn',
      ...(extra.args ?? []),
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let log = '';
  child.stderr!.on('data', (d) => {
    log += d;
  });
  await waitForListening(child, port, {
    name: 'the TRE',
    installHint: 'build it first (npm run build)',
    output: () => log,
    timeoutMs: extra.timeoutMs ?? 15_000,
  }).catch((err: Error) => {
    child.kill('SIGKILL'); // too slow to listen: not left running behind the error
    throw err;
  });
  return {
    child,
    /** What the TRE wrote to stderr so far (JSON log lines, warn and above). */
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}

const BASE = Date.UTC(2025, 0, 1);
/** A meter's i-th 15-minute reading of 100 Wh, as the ingest loads send it. */
export const reading = (i: number) =>
  JSON.stringify({
    v: 1,
    requestId: `r${i}`,
    intervalStart: new Date(BASE + i * 900_000).toISOString(),
    intervalMinutes: 15,
    energyWh: 100,
    registerWh: 100 * (i + 1),
  });
