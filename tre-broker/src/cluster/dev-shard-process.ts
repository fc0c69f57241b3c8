/**
 * One `tre start --cluster` of a dev cluster (dev-cluster.ts) as a child process: its log lines
 * shown with its name, whether it serves MQTT (a primary) or follows its shard's journal (a
 * standby, until it takes over), and its exit.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import { createInterface } from 'node:readline';
import { DevClusterError } from './dev-cluster-error.js';
import type { shardPaths } from './dev-release.js';

export const HOST = '127.0.0.1';
const LOG_TAIL = 40;
/** How often the port is tried when the TRE's log level hides its "TRE listening" line. */
const POLL_MS = 250;

/** pino's level numbers by name. */
export const LOG_LEVELS: Record<string, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Number.POSITIVE_INFINITY,
};

/**
 * One line of a child's log for the console: a pino JSON line as `[s1] INFO message k=v ...` when
 * its level is at least `minLevel`; any other line as it is.
 */
export function formatLogLine(source: string, line: string, minLevel: number): string | undefined {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `[${source}] ${line}`;
  }
  if (typeof entry !== 'object' || entry === null || typeof entry.level !== 'number')
    return `[${source}] ${line}`;
  if (entry.level < minLevel) return undefined;
  const name = Object.entries(LOG_LEVELS).find(([, n]) => n === entry.level)?.[0] ?? String(entry.level);
  const { level: _l, time: _t, pid: _p, hostname: _h, name: _n, msg, ...rest } = entry;
  const fields = Object.entries(rest).map(([k, v]) => {
    if (v && typeof v === 'object' && 'message' in v) return `${k}=${JSON.stringify((v as Error).message)}`;
    return `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
  });
  return [`[${source}]`, name.toUpperCase(), String(msg ?? ''), ...fields].join(' ');
}

/** One `tre start --cluster` child process of the dev cluster. */
export interface DevTre {
  /** Its directory's name: its shard's (s1), or a standby's (s1-b). */
  name: string;
  /** The shard it is a TRE of (its certificate names urn:tre:tre:<shard>). */
  shard: string;
  /** Its MQTT endpoint (mutual TLS); a standby listens there only once it took the shard over. */
  url: string;
  port: number;
  pid: number;
  /** Its TPM, `swtpm:host=...,port=...`. */
  tcti: string;
  pkiDir: string;
  dataDir: string;
  /** Its /metrics endpoint, when the options after `--` include --metrics. */
  metricsUrl?: string;
  /** Now: serving MQTT (it holds the shard's lease), following the shard's journal, or gone. */
  readonly role: 'primary' | 'standby' | 'exited';
  /**
   * Resolves once it serves MQTT (a standby: after taking the shard over), with the takeover time
   * it logged (from taking the lease to journaling); never when it exits first.
   */
  readonly serving: Promise<{ takeoverMs?: number }>;
  /** Resolves with the exit code (null: killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** Sends `signal` (default SIGTERM) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Something started that `stop` undoes. */
export interface Started {
  stop(): Promise<void>;
}

/** Whether something accepts TCP connections on the loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((answer) => {
    const socket = netConnect({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      answer(true);
    });
    socket.once('error', () => answer(false));
  });
}

/**
 * Spawns one `tre start --cluster` on `port`. A primary is `ready` once it listens (its "TRE
 * listening" line, or at a log level above info the port taking connections: the TRE listens only
 * once every flow is wired); a standby once it says it follows the journal (or, when its log level
 * hides that, once it runs), and it is `serving` once it listens after taking over. `ready` rejects
 * with its last log lines if it exits first or takes longer than `startTimeoutMs`.
 */
export function launchTre(a: {
  name: string;
  shard: string;
  /** Started while its shard's primary serves: it stands by. */
  standby: boolean;
  port: number;
  metricsPort?: number;
  /** The snapshot's `tre` CLI. */
  cli: string;
  args: string[];
  tcti: string;
  paths: ReturnType<typeof shardPaths>;
  minLevel: number;
  /** Whether the TRE logs at info or below (its role and "TRE listening" lines). */
  logsInfo: boolean;
  o: { log: (line: string) => void; startTimeoutMs: number; stopTimeoutMs: number; signal?: AbortSignal };
}): { process: Started; ready: Promise<DevTre> } {
  const { name, o } = a;
  const what = a.standby ? `standby ${name} of ${a.shard}` : `shard ${name}`;
  // The TREs run with this process's Node flags: they are measured, as they were when sealing here.
  // Their own process group: a Ctrl-C at the terminal reaches this process, which stops them in order.
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, a.cli, ...a.args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  const tail: string[] = [];
  const exited = new Promise<number | null>((done) => child.once('close', (code) => done(code)));
  const alive = () => child.exitCode === null && child.signalCode === null;
  const killNow = () => {
    if (alive()) child.kill('SIGKILL');
  };
  process.once('exit', killNow);
  const kill = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (alive()) child.kill(signal);
    const timer = setTimeout(killNow, o.stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  let role: DevTre['role'] = 'standby';
  let takeoverMs: number | undefined;
  let onServing: () => void = () => {};
  const serving = new Promise<{ takeoverMs?: number }>((resolveServing) => {
    onServing = () => {
      if (role !== 'standby') return;
      role = 'primary';
      resolveServing({ takeoverMs });
    };
  });
  let onStandingBy: () => void = () => {};
  createInterface({ input: child.stderr! }).on('line', (line) => {
    tail.push(line);
    if (tail.length > LOG_TAIL) tail.shift();
    const shown = formatLogLine(name, line, a.minLevel);
    if (shown !== undefined) o.log(shown);
    const entry = parseJson(line);
    const msg = String(entry?.msg);
    if (typeof entry?.takeoverMs === 'number') takeoverMs = entry.takeoverMs;
    if (msg.startsWith('TRE listening')) onServing();
    else if (msg.startsWith('this TRE is a standby')) onStandingBy();
  });
  // At a log level above info the port says when it serves (a standby's, after its takeover).
  const poll = setInterval(() => {
    void accepts(a.port).then((yes) => {
      if (yes && alive()) onServing();
    });
  }, POLL_MS);
  void serving.then(() => clearInterval(poll));
  const logEnds = () => (tail.length ? `its log ends:\n${tail.join('\n')}` : 'it logged nothing');
  let started = false;
  void exited.then((code) => {
    clearInterval(poll);
    role = 'exited';
    process.removeListener('exit', killNow);
    if (started) o.log(`[${name}] exited (${code ?? child.signalCode})`);
  });
  const ready = new Promise<DevTre>((resolveReady, rejectReady) => {
    let settled = false;
    const settle = (then: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      then();
    };
    const timer = setTimeout(
      () =>
        settle(() =>
          rejectReady(
            new DevClusterError(
              'SHARD_NOT_READY',
              a.standby
                ? `${what} did not stand by within ${o.startTimeoutMs} ms; ${logEnds()}`
                : `${what} did not listen on port ${a.port} within ${o.startTimeoutMs} ms; ${logEnds()}`,
            ),
          ),
        ),
      o.startTimeoutMs,
    );
    const onAbort = () =>
      settle(() =>
        rejectReady(new DevClusterError('ABORTED', 'the start was interrupted; stopped what had started')),
      );
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const resolveNow = () =>
      settle(() => {
        started = true;
        resolveReady({
          name,
          shard: a.shard,
          url: `mqtts://${HOST}:${a.port}`,
          port: a.port,
          pid: child.pid!,
          tcti: a.tcti,
          pkiDir: a.paths.pki,
          dataDir: a.paths.data,
          metricsUrl: a.metricsPort === undefined ? undefined : `http://${HOST}:${a.metricsPort}/metrics`,
          get role() {
            return role;
          },
          serving,
          exited,
          kill,
        });
      });
    void serving.then(resolveNow);
    if (a.standby) {
      onStandingBy = resolveNow;
      if (!a.logsInfo) child.once('spawn', resolveNow);
    }
    void exited.then((code) =>
      settle(() =>
        rejectReady(
          new DevClusterError(
            'SHARD_EXITED',
            `${what} exited (${code ?? child.signalCode}) before it ${a.standby ? 'stood by' : 'listened'}; ${logEnds()}`,
          ),
        ),
      ),
    );
    child.once('error', (err) =>
      settle(() => rejectReady(new DevClusterError('SHARD_EXITED', `cannot run ${what}: ${err.message}`))),
    );
  });
  return { process: { stop: () => kill() }, ready };
}

function parseJson(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
