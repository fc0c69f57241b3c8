/**
 * `tre-sim run` stopped by a signal, during set-up and while running: it exits with the signal's
 * code and leaves no swtpm process and no temporary directory behind (a real child process, a
 * TMPDIR and memory directory of its own).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { processesUnder } from '@tre/hardware';
import { afterAll, describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

async function interrupt(signal: NodeJS.Signals, when: RegExp) {
  const dir = await mkdtemp(join(tmpdir(), 'tre-sim-signal-'));
  dirs.push(dir);
  const child = spawn(process.execPath, [cli, 'run', '--households', '4', '--days', '3', '--speed', '200'], {
    env: { ...process.env, TMPDIR: dir, TRE_MEMORY_TMPDIR: dir }, // its temporary and in-memory state here
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d) => {
      log += d;
      if (when.test(log)) resolve();
    });
    void exited.then(() => reject(new Error(`exited before ${when}: ${log}`)));
  });
  expect(await processesUnder(dir)).not.toEqual([]); // swtpm is running
  child.kill(signal);
  const code = await exited;
  return { code, log, left: await readdir(dir), running: await processesUnder(dir) };
}

describe('tre-sim run stopped by a signal', () => {
  it('SIGTERM while running: exit 143, swtpm stopped, temporary state removed', {
    timeout: 120_000,
  }, async () => {
    const r = await interrupt('SIGTERM', /day 1\/3/);
    expect(r.code, r.log).toBe(143);
    expect(r.log).toMatch(/SIGTERM: stopping/);
    expect(r.running).toEqual([]);
    expect(r.left).toEqual([]);
  });

  it('SIGINT during set-up: stops when set-up ends, exit 130, nothing left', {
    timeout: 120_000,
  }, async () => {
    const r = await interrupt('SIGINT', /registering households|issuing/);
    expect(r.code, r.log).toBe(130);
    expect(r.log).toMatch(/SIGINT: stopping when set-up ends/);
    expect(r.running).toEqual([]);
    expect(r.left).toEqual([]);
  });
});
