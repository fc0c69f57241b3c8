/**
 * The TRE's /metrics scraped by a real Prometheus (Debian `prometheus`, installed by
 * `scripts/setup.sh test`): `tre start --metrics --metrics-listen 127.0.0.1:0` as a child process, meters
 * connected over mutual TLS sending readings (one malformed), Prometheus scraping every second on
 * a free loopback port until its query API answers with what was sent. The Grafana dashboard's
 * PromQL references only metrics the TRE exports.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, registerHouseholds } from '@tre/tre-broker';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measuredConfigOf, treSettingsFrom } from '../src/cli/tre-options.js';
import { parseListenAddress } from '../src/metrics/metrics-server.js';
import { connectWith } from './support/tre-fixture.js';
import { spawnTre, type TreProcess, treCli } from './support/tre-process.js';

const METERS = 3;
const READINGS = 4;
let dir = '';
let tre: TreProcess | undefined;
let prometheus: ChildProcess | undefined;
let metricsUrl = '';
const clients: MqttClient[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tre-metrics-'));
  const pki = join(dir, 'pki');
  const data = join(dir, 'data');
  const { ca } = await CertificateAuthority.initForDevelopment(pki);
  const meters = Array.from({ length: METERS }, (_, i) => `pm${i}`);
  const files = await Promise.all(meters.map((m) => ca.issue('meter', m)));
  await registerHouseholds(
    data,
    meters.map((m) => ({ meterId: m, supplierId: 's1', dnoId: 'd1', capacityW: 9_000, account: `a-${m}` })),
  );
  tre = await spawnTre(pki, data, 0, ['--metrics', '--metrics-listen', '127.0.0.1:0']);
  const line = tre
    .log()
    .split('\n')
    .find((l) => l.includes('TRE metrics listening'));
  metricsUrl = `http://127.0.0.1:${(JSON.parse(line!) as { port: number }).port}`;
  const url = `mqtts://127.0.0.1:${tre.port}`;
  for (const f of files) clients.push(await connectWith(url, f));
  const base = Date.UTC(2026, 0, 5);
  await Promise.all(
    clients.map(async (c, m) => {
      for (let i = 0; i < READINGS; i++) {
        const body = {
          v: 1,
          requestId: `pm${m}-${i}`,
          intervalStart: new Date(base + i * 900_000).toISOString(),
          intervalMinutes: 15,
          energyWh: 100,
          registerWh: 100 * (i + 1),
        };
        await c.publishAsync(`tre/v1/meter/pm${m}/reading`, JSON.stringify(body), { qos: 1 });
      }
    }),
  );
  await clients[0]!.publishAsync('tre/v1/meter/pm0/reading', '{"not":"a reading"}', { qos: 1 });
}, 60_000);

afterAll(async () => {
  for (const c of clients) c.end(true);
  if (prometheus && prometheus.exitCode === null) {
    prometheus.kill('SIGTERM');
    await once(prometheus, 'exit');
  }
  await tre?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The metric families the TRE's /metrics exports (a histogram's series with their suffixes). */
async function exported(): Promise<Set<string>> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  const names = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name!);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${name}${s}`);
  }
  return names;
}

describe('TRE metrics', () => {
  it('takes --metrics-listen as host:port', () => {
    expect(parseListenAddress('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListenAddress('[::1]:0')).toEqual({ host: '::1', port: 0 });
    for (const bad of ['9464', '127.0.0.1', '::1:9464', 'host:65536', 'a b:1'])
      expect(() => parseListenAddress(bad), bad).toThrow(/is not host:port/);
  });

  it('serves metrics only when measured: --metrics is in the measured configuration, --metrics-listen alone is refused', () => {
    const flags = {
      minGroupSize: 50,
      epsilon: '1/1',
      dailyBudget: 100,
      rollingBudget: 1_500,
      releaseMinutes: 30,
      logLevel: 'info',
      clockSpeed: 1,
    };
    expect(measuredConfigOf(treSettingsFrom({ ...flags, metrics: true }))).toMatchObject({ metrics: true });
    // A TRE without metrics measures as it did before they existed.
    expect(measuredConfigOf(treSettingsFrom(flags))).not.toHaveProperty('metrics');
    const run = spawnSync(process.execPath, [treCli, 'start', '--metrics-listen', '127.0.0.1:0'], {
      encoding: 'utf8',
    });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/--metrics-listen needs --metrics/);
  });

  it('answers /healthz and /readyz', async () => {
    const health = await fetch(`${metricsUrl}/healthz`);
    expect(health.status).toBe(200);
    const ready = await fetch(`${metricsUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, checks: { store: true, broker: true } });
    expect((await fetch(`${metricsUrl}/other`)).status).toBe(404);
  });

  it('is scraped by Prometheus: connections, messages by family, refusals by reason', {
    timeout: 90_000,
  }, async () => {
    const port = await freePort();
    const target = new URL(metricsUrl).host;
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: tre',
        `    static_configs: [{ targets: ['${target}'] }]`,
        '',
      ].join('\n'),
    );
    let log = '';
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'prometheus-data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    prometheus.stderr!.on('data', (d) => {
      log += d;
    });
    /** The value of a PromQL query, once Prometheus answers it with exactly one series. */
    const query = async (promql: string): Promise<number | undefined> => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(promql)}`);
        const body = (await res.json()) as { data?: { result: { value: [number, string] }[] } };
        const result = body.data?.result ?? [];
        return result.length === 1 ? Number(result[0]!.value[1]) : undefined;
      } catch {
        return undefined; // not listening yet
      }
    };
    const until = async (promql: string, expected: number) => {
      for (const deadline = Date.now() + 60_000; ; await new Promise((r) => setTimeout(r, 250))) {
        const value = await query(promql);
        if (value === expected) return;
        if (prometheus!.exitCode !== null) throw new Error(`prometheus exited: ${log}`);
        if (Date.now() > deadline)
          throw new Error(`${promql} is ${value}, not ${expected}, after 60 s; prometheus log:\n${log}`);
      }
    };
    await until('up{job="tre"}', 1);
    await until('tre_connections', METERS);
    await until('tre_connections_total', METERS);
    await until('tre_messages_received_total{family="reading"}', METERS * READINGS + 1);
    await until('tre_refusals_total{reason="MALFORMED"}', 1);
    await until('tre_messages_sent_total{family="inbox/receipt"}', 1);
    await until('tre_store_commit_seconds_count > bool 0', 1);
    await until('count(tre_build_info)', 1);
  });

  it('references in the Grafana dashboard only metrics the TRE exports', async () => {
    const dashboard = JSON.parse(
      await readFile(new URL('../grafana/tre-dashboard.json', import.meta.url), 'utf8'),
    ) as { panels: { title: string; targets?: { expr: string }[] }[] };
    const names = await exported();
    const used = new Set<string>();
    for (const panel of dashboard.panels)
      for (const { expr } of panel.targets ?? []) for (const name of metricNames(expr)) used.add(name);
    expect(used.size).toBeGreaterThan(10);
    expect([...used].filter((n) => !names.has(n))).toEqual([]);
  });
});

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
]);

/** The metric names a PromQL expression selects: identifiers that are not functions, keywords or labels. */
function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // strings
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\[[^\]]*\]/g, '') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ''); // label lists
  return [...stripped.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)]
    .filter(([, name, call]) => !call && !PROMQL_WORDS.has(name!) && !/^(e|inf|nan)$/i.test(name!))
    .map(([, name]) => name!);
}
