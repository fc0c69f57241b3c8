/**
 * The process scope: the descendant tree from (pid, ppid) pairs, /proc/<pid>/stat parsing, and a
 * real command under a scope (test/fixtures, running the built dist/) stopped by signals and
 * completing normally: its children stopped, its temporary and memory directories removed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { descendantsOf, parseProcStat } from '../src/process/process-scope.js';

describe('descendantsOf', () => {
  it('walks the whole tree, parents first, and nothing outside it', () => {
    const procs = [
      { pid: 1, ppid: 0 },
      { pid: 10, ppid: 1 },
      { pid: 11, ppid: 10 },
      { pid: 12, ppid: 10 },
      { pid: 13, ppid: 11 },
      { pid: 14, ppid: 13 },
      { pid: 20, ppid: 1 },
      { pid: 21, ppid: 20 },
    ];
    expect(descendantsOf(10, procs)).toEqual([11, 12, 13, 14]);
    expect(descendantsOf(14, procs)).toEqual([]);
    expect(descendantsOf(99, procs)).toEqual([]);
  });

  it('terminates on a cycle (pids read at different moments)', () => {
    expect(
      descendantsOf(1, [
        { pid: 2, ppid: 1 },
        { pid: 3, ppid: 2 },
        { pid: 2, ppid: 3 },
      ]),
    ).toEqual([2, 3]);
  });
});

describe('parseProcStat', () => {
  it('counts fields from the last parenthesis of the command name', () => {
    const stat = '4242 (we(ird) name) S 17 4242 4242 0 -1 4194560 1 0 0 0 2 3 0 0 20 0 1 0 987654 1 2 3';
    expect(parseProcStat(stat)).toEqual({ pid: 4242, ppid: 17, state: 'S', start: 987654 });
    expect(parseProcStat('garbage')).toBeUndefined();
  });

  it('reads this process', async () => {
    const self = parseProcStat(await readFile('/proc/self/stat', 'utf8'));
    expect(self?.pid).toBe(process.pid);
    expect(self?.ppid).toBe(process.ppid);
  });
});

const fixture = fileURLToPath(new URL('./fixtures/process-scope-child.mjs', import.meta.url));
const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

/** Processes whose command line names `marker`. */
async function processesNaming(marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(marker)) found.push(cmdline.replaceAll('\0', ' '));
  }
  return found;
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; !(await check()); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts the fixture with a TMPDIR of its own; resolves once `want` processes name its root. */
async function start(mode: string, want: number) {
  const dir = await mkdtemp(join(tmpdir(), 'process-scope-'));
  dirs.push(dir);
  const tmp = join(dir, 'tmp');
  await mkdir(tmp);
  const child: ChildProcess = spawn(process.execPath, [fixture, mode], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  child.stderr!.on('data', (d) => {
    err += d;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await until(async () => /ready (\S+) (\S+)/.test(out) || child.exitCode !== null, 'ready');
  const [, root = '', memory = ''] = /ready (\S+) (\S+)/.exec(out) ?? [];
  expect(root.startsWith(`${tmp}/fixture-`), out + err).toBe(true);
  expect(memory.startsWith('/dev/shm/fixture-'), out + err).toBe(true);
  if (want) await until(async () => (await processesNaming(root)).length >= want, 'the children');
  return { child, exited, root, memory, tmp, output: () => ({ out, err }) };
}

describe('a command under a process scope', () => {
  it('SIGTERM: children and grandchildren stopped (SIGKILL after the grace), temporary and memory directories removed, exit 143', {
    timeout: 20_000,
  }, async () => {
    const r = await start('signals', 3);
    r.child.kill('SIGTERM');
    const code = await r.exited;
    expect(code, r.output().err).toBe(143);
    expect(r.output().err).toBe('fixture: SIGTERM: stopping child processes and removing temporary files\n');
    expect(await processesNaming(r.root)).toEqual([]);
    expect(await readdir(r.tmp)).toEqual([]);
    expect(existsSync(r.memory)).toBe(false);
  });

  it('a second signal while stopping exits at once, killing what is left (exit 130 for SIGINT)', {
    timeout: 20_000,
  }, async () => {
    const r = await start('stubborn', 3); // 30 s grace for the child ignoring SIGTERM
    r.child.kill('SIGINT');
    await until(async () => /stopping/.test(r.output().err), 'the stop line');
    r.child.kill('SIGINT');
    expect(await r.exited).toBe(130);
    expect(r.output().err).toMatch(/fixture: SIGINT again: exiting now/);
    await until(async () => (await processesNaming(r.root)).length === 0, 'no process left');
  });

  it('close() on completion: children stopped, temp root removed, TMPDIR restored', {
    timeout: 20_000,
  }, async () => {
    const r = await start('close', 0);
    expect(await r.exited).toBe(0);
    const { out } = r.output();
    expect(out).toContain(`tmpdir ${r.root}\n`); // tmpdir() inside the scope is the root
    expect(out).toContain(`closed ${r.tmp} (unset)\n`);
    expect(await processesNaming(r.root)).toEqual([]);
    expect(await readdir(r.tmp)).toEqual([]);
    expect(existsSync(r.memory)).toBe(false);
  });
});
