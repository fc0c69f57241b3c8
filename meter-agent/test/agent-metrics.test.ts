/**
 * `meter-agent run` under a stand-in systemd, with `metrics:` in agent.yaml: the daemon (child
 * process, built CLI) reads a real pseudo-terminal, attests a TRE (swtpm) that serves its own
 * /metrics, sends its intervals, notifies READY=1 and WATCHDOG=1 on a real unix datagram socket
 * (NOTIFY_SOCKET, WATCHDOG_USEC), answers /readyz once the port is open and the TRE trusted, and
 * STOPPING=1 on SIGTERM. Neither /metrics names a meter, household, account or bid, nor carries a
 * reading, after real traffic.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDsmrTelegram, type Swtpm, startSwtpm } from '@tre/hardware';
import { attestationPolicyFor } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTreFixture, type TreFixture } from '../../tre-broker/test/support/tre-fixture.js';
import { agentConfigSchema } from '../src/agent-config.js';
import { listenForNotifications, type NotifyListener } from './support/notify-listener.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const feeder = fileURLToPath(new URL('./support/meter_pty.py', import.meta.url));
const QUARTER = 15 * 60_000;
const STEP = 5 * 60_000;
const METER = 'hx-meter-7q';
const OTHER = 'hx-other-3k';
const BID = 'bid-Zq81xK3vT';
const EVENT = 'ev-hx-9w';

let swtpm: Swtpm;
let fx: TreFixture;
let systemd: NotifyListener | undefined;
let dir = '';
const children: ChildProcess[] = [];
beforeAll(async () => {
  swtpm = await startSwtpm();
  fx = await startTreFixture({ tpmTcti: swtpm.tcti, metrics: { host: '127.0.0.1', port: 0 } });
  dir = await mkdtemp(join(tmpdir(), 'agent-metrics-'));
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await systemd?.close();
  await fx?.close();
  await swtpm?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Every sample of a Prometheus text exposition: its name, labels and value. */
function samples(text: string): { name: string; labels: string; value: number }[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(l)!;
      return { name: m[1]!, labels: m[2] ?? '', value: Number(m[3]) };
    });
}

describe('meter-agent metrics, health and systemd notifications', () => {
  it('takes metrics.listen as host:port, 127.0.0.1:9465 by default', () => {
    const base = {
      meterId: 'm1',
      tre: { endpoints: ['mqtts://tre:8883'], ca: 'ca', cert: 'c', key: 'k', attestationPolicy: 'p' },
      meter: { port: '/dev/ttyUSB0' },
    };
    expect(agentConfigSchema.parse(base).metrics).toBeUndefined();
    expect(agentConfigSchema.parse({ ...base, metrics: {} }).metrics).toEqual({ listen: '127.0.0.1:9465' });
    expect(agentConfigSchema.parse({ ...base, metrics: { listen: '[::1]:9465' } }).metrics?.listen).toBe(
      '[::1]:9465',
    );
    for (const listen of ['9465', 'localhost', 'h:70000', '::1:9465'])
      expect(agentConfigSchema.safeParse({ ...base, metrics: { listen } }).success, listen).toBe(false);
  });

  it('serves metrics and readiness, notifies systemd, and leaks no id or reading', {
    timeout: 90_000,
  }, async () => {
    const files = await fx.issue('meter', METER);
    const policy = await fx.ca.signAsRegulator(
      'attestationPolicy',
      attestationPolicyFor({ fixture: true }, { policyId: 'release' }),
    );
    await writeFile(join(dir, 'policy.jws'), policy);
    // An hour and a half of telegrams, 37 Wh apart every 5 minutes: closed quarter hours of 111 Wh.
    const t0 = Math.floor((Date.now() - 3 * 3_600_000) / QUARTER) * QUARTER;
    const registers = Array.from({ length: 19 }, (_, i) => [4_321_000 + i * 37, 1_234_567] as const);
    const telegrams = registers.map((importWh, i) =>
      formatDsmrTelegram({ timestamp: new Date(t0 + i * STEP), dst: false, importWh: [...importWh] }),
    );
    await writeFile(join(dir, 'telegrams.bin'), telegrams.join('\0'), 'latin1');
    const meter = spawn('python3', [feeder, join(dir, 'telegrams.bin')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(meter);
    const port = await new Promise<string>((resolve) =>
      meter.stdout!.once('data', (d) => resolve(String(d).trim())),
    );
    await writeFile(
      join(dir, 'agent.yaml'),
      [
        `meterId: ${METER}`,
        'tre:',
        `  endpoints: [${fx.url}]`,
        `  ca: ${files.ca}`,
        `  cert: ${files.cert}`,
        `  key: ${files.key}`,
        '  attestationPolicy: policy.jws',
        'meter:',
        `  port: ${port}`,
        'stateDir: state',
        'metrics:',
        '  listen: 127.0.0.1:0',
        '',
      ].join('\n'),
    );
    const socket = join(dir, 'notify.sock');
    systemd = await listenForNotifications(socket);
    const agent = spawn(process.execPath, [cli, 'run', '--config', join(dir, 'agent.yaml')], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NOTIFY_SOCKET: socket, WATCHDOG_USEC: '400000' },
    });
    children.push(agent);
    let log = '';
    agent.stderr!.on('data', (d) => {
      log += d;
    });
    const until = async (what: string, ok: () => boolean | Promise<boolean>) => {
      for (const deadline = Date.now() + 30_000; !(await ok()); await new Promise((r) => setTimeout(r, 100)))
        if (Date.now() > deadline) throw new Error(`${what} within 30 s; agent log:\n${log}`);
    };
    await systemd.received('READY=1');
    await systemd.received('WATCHDOG=1');
    const agentUrl = /metrics on (http:\/\/\S+)\/metrics/.exec(log)?.[1];
    expect(agentUrl, log).toBeDefined();
    expect((await fetch(`${agentUrl}/healthz`)).status).toBe(200);
    await until('meter port open', () => log.includes('meter port open'));
    meter.stdin!.write('go\n');
    const stored = () =>
      (
        fx.tre.store.db.prepare('SELECT count(*) AS n FROM readings WHERE meter_id = ?').get(METER) as {
          n: number;
        }
      ).n;
    await until('6 intervals stored', () => stored() >= 6);
    await until('agent ready', async () => (await fetch(`${agentUrl}/readyz`)).status === 200);
    expect(await (await fetch(`${agentUrl}/readyz`)).json()).toEqual({
      ready: true,
      checks: { config: true, meterPort: true, treLink: true },
    });

    // A bid from another household (for an event the TRE does not know: refused, counted by reason).
    const other = await fx.connect('meter', OTHER);
    const bid = {
      v: 1,
      requestId: 'rq-hx',
      bidId: BID,
      eventId: EVENT,
      quantityWh: 777,
      pricePerMWh: 123_457,
    };
    await other.publishAsync(`tre/v1/meter/${OTHER}/bid`, JSON.stringify(bid), { qos: 1 });

    const treUrl = `http://127.0.0.1:${fx.tre.metrics!.address.port}`;
    const agentText = await (await fetch(`${agentUrl}/metrics`)).text();
    await until('the TRE counted the bid', async () =>
      (await (await fetch(`${treUrl}/metrics`)).text()).includes(
        'tre_messages_received_total{family="bid"} 1',
      ),
    );
    const treText = await (await fetch(`${treUrl}/metrics`)).text();
    const treReady = await (await fetch(`${treUrl}/readyz`)).json();
    expect(treReady).toEqual({ ready: true, checks: { store: true, broker: true, attestationKey: true } });

    const agentSamples = samples(agentText);
    const value = (name: string, labels = '') =>
      agentSamples.find((s) => s.name === name && s.labels === labels)?.value;
    expect(value('meter_agent_meter_telegrams_total')).toBeGreaterThanOrEqual(6);
    expect(value('meter_agent_meter_crc_errors_total')).toBe(0);
    expect(value('meter_agent_meter_port_open')).toBe(1);
    expect(value('meter_agent_tre_link_state', '{state="trusted"}')).toBe(1);
    expect(value('meter_agent_tre_attestation_verdict', '{verdict="trusted",check="none"}')).toBe(1);
    expect(agentSamples.some((s) => s.name === 'meter_agent_outbox_depth')).toBe(true);
    expect(
      agentSamples.some(
        (s) => s.name === 'meter_agent_build_info' && /version="\d+\.\d+\.\d+"/.test(s.labels),
      ),
    ).toBe(true);
    expect(samples(treText).some((s) => s.name === 'tre_attestation_quotes_total' && s.value >= 1)).toBe(
      true,
    );

    // Nothing names a household (meter id, account), a bid or an event; no value is a reading.
    const ids = [METER, OTHER, `acc-${METER}`, `acc-${OTHER}`, BID, EVENT, 'rq-hx'];
    const readingValues = new Set([111, 777, 123_457, 1_234_567, ...registers.map(([wh]) => wh)]);
    for (const [who, text] of [
      ['agent', agentText],
      ['TRE', treText],
    ] as const) {
      for (const id of ids) expect(text.includes(id), `${who} /metrics names ${id}`).toBe(false);
      const leaked = samples(text).filter(
        (s) => readingValues.has(s.value) && !s.name.startsWith('process_') && !s.name.startsWith('nodejs_'),
      );
      expect(leaked, `${who} /metrics carries a reading value`).toEqual([]);
    }

    agent.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => agent.once('exit', resolve));
    expect(code).toBe(0);
    await systemd.received('STOPPING=1');
    meter.stdin!.end();
  });
});
