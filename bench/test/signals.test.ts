/**
 * A benchmark stopped by a signal (the built CLI as a real child process, with a TMPDIR of its
 * own): it exits with the signal's code and leaves no child process (swtpm, the TRE) and no
 * temporary file behind.
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

/** Runs `tre-bench <args>` and sends `signal` once a child process whose command line matches `child` runs. */
async function interrupt(signal: NodeJS.Signals, args: string[], child: RegExp) {
  const dir = await mkdtemp(join(tmpdir(), 'tre-bench-signal-'));
  dirs.push(dir);
  const bench = spawn(process.execPath, [cli, ...args], {
    env: { ...process.env, TMPDIR: dir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  bench.stderr.on('data', (d) => {
    log += d;
  });
  const exited = new Promise<number | null>((resolve) => bench.once('exit', (code) => resolve(code)));
  for (;;) {
    if (bench.exitCode !== null) throw new Error(`exited before starting ${child}: ${log}`);
    if ((await processesUnder(dir)).some((c) => child.test(c))) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  bench.kill(signal);
  const code = await exited;
  return { code, log, left: await readdir(dir), running: await processesUnder(dir) };
}

describe('tre-bench stopped by a signal', () => {
  it('SIGTERM with swtpm running (attest): exit 143, swtpm stopped, temporary state removed', {
    timeout: 60_000,
  }, async () => {
    const r = await interrupt('SIGTERM', ['attest'], /^swtpm /);
    expect(r.code, r.log).toBe(143);
    expect(r.log).toMatch(/^tre-bench: SIGTERM: stopping child processes and removing temporary files$/m);
    expect(r.running).toEqual([]);
    expect(r.left).toEqual([]);
  });

  it('SIGINT with the TRE running (ingest): exit 130, the TRE stopped, temporary state removed', {
    timeout: 60_000,
  }, async () => {
    const r = await interrupt('SIGINT', ['ingest', '--meters', '2', '--per-meter', '2000'], / start --pki /);
    expect(r.code, r.log).toBe(130);
    expect(r.log).toMatch(/^tre-bench: SIGINT: stopping child processes and removing temporary files$/m);
    expect(r.running).toEqual([]);
    expect(r.left).toEqual([]);
  });
});
