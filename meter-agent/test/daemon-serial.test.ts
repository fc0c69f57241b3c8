/**
 * `meter-agent run` as installed on a Pi, end to end: the daemon (a child process, built CLI) reads
 * DSMR telegrams from a real pseudo-terminal through the real serialport binding, attests the TRE
 * (swtpm quote against the regulator-signed whitelist), then sends 15-minute intervals; the TRE
 * stores each once with the energy the registers imply; the household's own broker (real
 * mosquitto) gets the same meter, as Home Assistant discovers it. SIGTERM stops it cleanly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDsmrTelegram, type Swtpm, startSwtpm } from '@tre/hardware';
import { attestationPolicyFor } from '@tre/tre-broker';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTreFixture, type TreFixture } from '../../tre-broker/test/support/tre-fixture.js';
import { type HomeBrokerFixture, startHomeBroker } from './support/home-broker.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const feeder = fileURLToPath(new URL('./support/meter_pty.py', import.meta.url));
const QUARTER = 15 * 60_000;
const STEP = 5 * 60_000;

let swtpm: Swtpm;
let fx: TreFixture;
let home: HomeBrokerFixture;
const children: ChildProcess[] = [];
beforeAll(async () => {
  swtpm = await startSwtpm();
  fx = await startTreFixture({ tpmTcti: swtpm.tcti });
  home = await startHomeBroker();
});
afterAll(async () => {
  await home?.stop();
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await fx?.close();
  await swtpm?.stop();
});

describe('meter-agent run on a serial port', () => {
  it('reads the meter, attests the TRE, delivers every closed interval once', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'agent-daemon-'));
    const files = await fx.issue('meter', 'pi1');
    const policy = await fx.ca.signAsRegulator(
      'attestationPolicy',
      attestationPolicyFor({ fixture: true }, { policyId: 'release' }),
    );
    await writeFile(join(dir, 'policy.jws'), policy);
    // Two hours of telegrams, one every 5 minutes, 40 Wh apart: 8 closed quarter hours of 120 Wh.
    const t0 = Math.floor((Date.now() - 3 * 3_600_000) / QUARTER) * QUARTER;
    const telegrams = Array.from({ length: 25 }, (_, i) =>
      formatDsmrTelegram({
        timestamp: new Date(t0 + i * STEP),
        dst: false,
        importWh: [4_321_000 + i * 40, 1_234_000],
      }),
    );
    await writeFile(join(dir, 'telegrams.bin'), telegrams.join('\0'), 'latin1');
    const meter = spawn('python3', [feeder, join(dir, 'telegrams.bin')], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(meter);
    const port = await new Promise<string>((resolve) =>
      meter.stdout!.once('data', (d) => resolve(String(d).trim())),
    );
    expect(port).toMatch(/^\/dev\/pts\//);
    await writeFile(
      join(dir, 'agent.yaml'),
      [
        'meterId: pi1',
        'tre:',
        `  endpoints: [${fx.url}]`,
        `  ca: ${files.ca}`,
        `  cert: ${files.cert}`,
        `  key: ${files.key}`,
        '  attestationPolicy: policy.jws',
        'meter:',
        `  port: ${port}`,
        '  timeZone: Europe/Amsterdam',
        'stateDir: state',
        'local:',
        `  url: ${home.url}`,
        '  publishEverySeconds: 1',
        '',
      ].join('\n'),
    );
    // Home Assistant on the household's broker.
    const ha = await mqtt.connectAsync(home.url, { protocolVersion: 4 });
    const seen = new Map<string, string>();
    ha.on('message', (topic, payload) => seen.set(topic, payload.toString('utf8')));
    await ha.subscribeAsync(['homeassistant/#', 'meter-agent/#'], { qos: 1 });
    const agent = spawn(process.execPath, [cli, 'run', '--config', join(dir, 'agent.yaml')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(agent);
    let log = '';
    agent.stderr!.on('data', (d) => {
      log += d;
    });
    const until = async (what: string, ok: () => boolean) => {
      for (const deadline = Date.now() + 30_000; !ok(); await new Promise((r) => setTimeout(r, 100)))
        if (Date.now() > deadline) throw new Error(`${what} within 30 s; agent log:\n${log}`);
    };
    await until('meter port open', () => log.includes('meter port open'));
    meter.stdin!.write('go\n');
    const stored = () =>
      fx.tre.store.db
        .prepare(
          "SELECT interval_start AS t, energy_wh AS wh FROM readings WHERE meter_id = 'pi1' ORDER BY t",
        )
        .all() as { t: number; wh: number }[];
    await until('8 intervals stored', () => stored().length >= 8);
    expect(log).toMatch(/TRE trusted/);
    expect(stored()).toEqual(Array.from({ length: 8 }, (_, i) => ({ t: t0 + i * QUARTER, wh: 120 })));

    // The same meter at home: the last telegram's registers in kWh, its last interval, the TRE's trust.
    const json = (topic: string) => JSON.parse(seen.get(topic) ?? 'null');
    await until(
      'the last telegram at home',
      () => json('meter-agent/pi1/meter')?.energy_import_t1 === 4321.96,
    );
    expect(json('meter-agent/pi1/meter')).toMatchObject({ energy_import_t2: 1234, energy_export: 0 });
    expect(json('homeassistant/sensor/pi1_energy_import_t1/config')).toMatchObject({
      device_class: 'energy',
      state_class: 'total_increasing',
      unit_of_measurement: 'kWh',
      state_topic: 'meter-agent/pi1/meter',
    });
    await until(
      'the last interval at home',
      () => json('meter-agent/pi1/interval')?.interval_import === 0.12,
    );
    await until('trust at home', () => json('meter-agent/pi1/tre')?.tre_trust === 'trusted');
    expect(seen.get('meter-agent/pi1/availability')).toBe('online');
    expect([...seen.keys()].filter((t) => t.startsWith('tre/'))).toEqual([]);

    agent.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => agent.once('exit', resolve));
    expect(code).toBe(0);
    await until('offline at home', () => seen.get('meter-agent/pi1/availability') === 'offline');
    await ha.endAsync();
    meter.stdin!.end();
  });
});
