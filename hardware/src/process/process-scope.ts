/**
 * A process scope for a command-line entry: everything the command starts or leaves in temporary
 * directories goes when it ends, whether it completes or is stopped by SIGINT/SIGTERM.
 *
 * Opening it makes one private temporary root and points TMPDIR at it (Node's `os.tmpdir()` reads
 * TMPDIR on every call and children inherit the environment), so every later
 * `mkdtemp(join(tmpdir(), ...))` in this process and its children lands inside. On a signal it
 * prints one line to stderr, sends SIGTERM to every descendant (the whole tree, collected from
 * /proc before any is signalled, so grandchildren reparented when their parent dies are still
 * known), SIGKILLs what is left after a grace period, removes the root, and exits with 130
 * (SIGINT) or 143 (SIGTERM); a second signal while stopping exits at once. State written often
 * (agents' outboxes) goes to `memoryTmpdir()`: /dev/shm where there is one; inside a scope, a
 * private directory there that the scope removes with the root.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ProcStat {
  pid: number;
  ppid: number;
  /** One letter: R, S, D, Z (zombie), ... */
  state: string;
  /** Start time in clock ticks since boot: with the pid, a process's identity (pids are reused). */
  start: number;
}

/** Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so fields count from its last `)`. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')');
  const pid = Number.parseInt(text, 10);
  if (close < 0 || !Number.isInteger(pid)) return undefined;
  // After the name: state(3) ppid(4) pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  // utime stime cutime cstime priority nice num_threads itrealvalue starttime(22).
  const f = text
    .slice(close + 1)
    .trim()
    .split(/\s+/);
  const ppid = Number(f[1]);
  const start = Number(f[19]);
  if (!f[0] || !Number.isInteger(ppid) || !Number.isFinite(start)) return undefined;
  return { pid, ppid, state: f[0], start };
}

/** Every descendant of `root` (not `root` itself), parents before their children. */
export function descendantsOf(root: number, procs: readonly { pid: number; ppid: number }[]): number[] {
  const children = new Map<number, number[]>();
  for (const p of procs) {
    if (p.pid === p.ppid) continue;
    const list = children.get(p.ppid);
    if (list) list.push(p.pid);
    else children.set(p.ppid, [p.pid]);
  }
  const seen = new Set([root]);
  const out: number[] = [];
  for (let i = -1; i < out.length; i++) {
    for (const c of children.get(i < 0 ? root : out[i]!) ?? []) {
      if (seen.has(c)) continue;
      seen.add(c);
      out.push(c);
    }
  }
  return out;
}

/** The environment variable naming a scope's memory directory (children inherit it). */
const MEMORY_TMPDIR = 'TRE_MEMORY_TMPDIR';

/**
 * Where short-lived state that is written often goes (an agent's outbox in a simulation): a memory
 * file system (/dev/shm) where there is one, else `tmpdir()`; inside a process scope, the scope's
 * own directory there.
 */
export function memoryTmpdir(): string {
  return process.env[MEMORY_TMPDIR] ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
}

export interface ProcessScopeOptions {
  /** How long descendants get after SIGTERM before SIGKILL (default 3000 ms). */
  graceMs?: number;
}

export interface ProcessScope {
  /** The private temporary root (TMPDIR while the scope is open). */
  readonly tmpRoot: string;
  /** For normal completion: stops leftover descendants, removes the root, restores TMPDIR and the signal handlers. */
  close(): Promise<void>;
}

function readProcs(): ProcStat[] {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  const out: ProcStat[] = [];
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const s = parseProcStat(readFileSync(`/proc/${n}/stat`, 'utf8'));
      if (s) out.push(s);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function isAlive(p: ProcStat): boolean {
  try {
    const now = parseProcStat(readFileSync(`/proc/${p.pid}/stat`, 'utf8'));
    return !!now && now.start === p.start && now.state !== 'Z' && now.state !== 'X';
  } catch {
    return false;
  }
}

function signalAll(procs: Iterable<ProcStat>, signal: NodeJS.Signals): void {
  for (const p of procs) {
    try {
      process.kill(p.pid, signal);
    } catch {
      // already gone
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens the scope of the command `name` (call once, first thing, from a CLI entry). */
export function openProcessScope(name: string, opts: ProcessScopeOptions = {}): ProcessScope {
  const graceMs = opts.graceMs ?? 3000;
  const previousTmpdir = process.env.TMPDIR;
  const tmpRoot = mkdtempSync(join(tmpdir(), `${name}-`));
  process.env.TMPDIR = tmpRoot;
  const previousMemory = process.env[MEMORY_TMPDIR];
  const memoryRoot = existsSync('/dev/shm') ? mkdtempSync(join('/dev/shm', `${name}-`)) : undefined;
  if (memoryRoot) process.env[MEMORY_TMPDIR] = memoryRoot;
  const roots = memoryRoot ? [tmpRoot, memoryRoot] : [tmpRoot];
  /** Every descendant seen while stopping, by pid. */
  const tracked = new Map<number, ProcStat>();
  let state: 'open' | 'stopping' | 'done' = 'open';

  /** Adds descendants not yet seen; returns them. */
  const collect = (): ProcStat[] => {
    const procs = readProcs();
    const byPid = new Map(procs.map((p) => [p.pid, p]));
    const fresh: ProcStat[] = [];
    for (const pid of descendantsOf(process.pid, procs)) {
      const p = byPid.get(pid)!;
      if (tracked.has(pid) || p.state === 'Z') continue;
      tracked.set(pid, p);
      fresh.push(p);
    }
    return fresh;
  };

  const stop = async (): Promise<void> => {
    signalAll(collect(), 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while ([...tracked.values()].some(isAlive)) {
      if (Date.now() >= deadline) {
        signalAll([...tracked.values()].filter(isAlive), 'SIGKILL');
        const killed = Date.now() + 1000;
        while ([...tracked.values()].some(isAlive) && Date.now() < killed) await sleep(20);
        break;
      }
      await sleep(50);
      signalAll(collect(), 'SIGTERM'); // started while stopping
    }
    // Retried: a process still stopping (or a TPM call finishing on a worker thread) may add a file meanwhile.
    await Promise.all(
      roots.map((p) => rm(p, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 })),
    );
  };

  const restore = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
    if (previousTmpdir === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previousTmpdir;
    if (previousMemory === undefined) delete process.env[MEMORY_TMPDIR];
    else process.env[MEMORY_TMPDIR] = previousMemory;
  };

  function onSignal(signal: NodeJS.Signals) {
    const code = signal === 'SIGINT' ? 130 : 143;
    if (state !== 'open') {
      process.stderr.write(`${name}: ${signal} again: exiting now (leaving ${roots.join(' and ')})\n`);
      collect();
      signalAll([...tracked.values()].filter(isAlive), 'SIGKILL');
      state = 'done';
      process.exit(code);
    }
    state = 'stopping';
    process.stderr.write(`${name}: ${signal}: stopping child processes and removing temporary files\n`);
    stop()
      .catch((err: Error) => process.stderr.write(`${name}: while stopping: ${err.message}\n`))
      .finally(() => {
        state = 'done';
        process.exit(code);
      });
  }

  /** An exit without close() (process.exit, an uncaught exception): what can be done synchronously. */
  function onExit() {
    if (state === 'done') return;
    signalAll(collect(), 'SIGTERM');
    for (const p of roots) rmSync(p, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }

  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  return {
    tmpRoot,
    async close() {
      if (state !== 'open') return;
      state = 'stopping';
      await stop();
      state = 'done';
      restore();
    },
  };
}
