/**
 * `meter-agent run` as installed on a Pi, end to end: the daemon (a child process, built CLI) reads
 * DSMR telegrams from a real pseudo-terminal through the real serialport binding, attests the TRE
 * (swtpm quote against the regulator-signed whitelist), then sends 15-minute intervals; the TRE
 * stores each once with the energy the registers imply. SIGTERM stops it cleanly.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDsmrTelegram, type Swtpm, startSwtpm } from '@tre/hardware';
import { attestationPolicyFor } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTreFixture, type TreFixture } from '../../tre-broker/test/support/tre-fixture.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const feeder = fileURLToPath(new URL('./support/meter_pty.py', import.meta.url));
const QUARTER = 15 * 60_000;
const STEP = 5 * 60_000;

let swtpm: Swtpm;
let fx: TreFixture;
const children: ChildProcess[] = [];
beforeAll(async () => {
  swtpm = await startSwtpm();
  fx = await startTreFixture({ tpmTcti: swtpm.tcti });
});
afterAll(async () => {
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
        '',
      ].join('\n'),
    );
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

    agent.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => agent.once('exit', resolve));
    expect(code).toBe(0);
    meter.stdin!.end();
  });
});
