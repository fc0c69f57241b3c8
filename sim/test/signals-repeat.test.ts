/**
 * `tre-sim run` sent a signal during set-up and then the same signal again (and SIGTERM) while it
 * stops: the repeats are said once and ignored, so set-up still ends, swtpm is stopped and the
 * temporary state removed, and it exits with the first signal's code (a real child process, a TMPDIR
 * and memory directory of its own). Under `process.once` the repeat killed it half-way.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ALREADY_STOPPING, processesUnder } from '@tre/hardware';
import { afterAll, describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

describe('tre-sim run and repeated stop signals', () => {
  it('SIGINT during set-up, then SIGINT and SIGTERM again: said once, ignored, exit 130, nothing left', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-sim-repeat-'));
    dirs.push(dir);
    const child = spawn(
      process.execPath,
      [cli, 'run', '--households', '4', '--days', '3', '--speed', '200'],
      {
        env: { ...process.env, TMPDIR: dir, TRE_MEMORY_TMPDIR: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let log = '';
    child.stderr.on('data', (d) => {
      log += d;
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const until = (when: RegExp) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (when.test(log)) {
            child.stderr.off('data', check);
            resolve();
          }
        };
        child.stderr.on('data', check);
        check();
        void exited.then((e) => reject(new Error(`exited (${e.code ?? e.signal}) before ${when}: ${log}`)));
      });
    await until(/registering households|issuing/);
    child.kill('SIGINT');
    await until(/SIGINT: stopping when set-up ends/);
    child.kill('SIGINT');
    await until(/SIGINT again: already stopping/);
    child.kill('SIGTERM');
    const e = await exited;
    expect(e, log).toEqual({ code: 130, signal: null });
    expect(log.split(ALREADY_STOPPING).length - 1, log).toBe(1);
    expect(await processesUnder(dir)).toEqual([]);
    expect(await readdir(dir)).toEqual([]);
  });
});
