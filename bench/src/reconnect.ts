/**
 * `reconnect`: the TRE restarted under thousands of connected agents that queued an hour of
 * readings each while it was down (issue 18, item 7). The TRE runs as its own process on a software
 * TPM (measured start, sealed keys, batched quotes); the agents are the real agent code (TreLink,
 * Outbox, HouseholdAgent, the TPM-quote attestor with the regulator's whitelist), spread over
 * forked load-generator processes. Measured from the moment the restarted TRE listens: until every
 * agent has re-attested, and until every queued reading is committed (each agent's outbox empty,
 * every reading PUBACKed; the TRE's store is counted after the run).
 *
 * Baseline, same run: mosquitto (TLS only) with the same agents and the same code, attestation
 * replaced by `trustWithoutAttestation`, so the reconnect schedule (TreLink's backoff) and the
 * backlog (QoS1 publishes) are the same; mosquitto is stopped and started the same way and kept
 * down at least as long as the TRE was. With `TRE_BENCH_PROFILE_OUT=<dir>` the restarted TRE's `.cpuprofile`
 * (whole process, and the storm window only) is copied there.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { memoryTmpdir } from '@tre/hardware';
import { CertificateAuthority } from '@tre/tre-broker';
import { summariseProfile } from './cpu-profile.js';
import { freePort } from './load.js';
import { meterCertificates } from './meter-certificates.js';
import { startMosquitto } from './mosquitto.js';
import type { AgentReport, ReconnectJob, WorkerMessage } from './reconnect-worker.js';
import { type BenchResult, percentile } from './report.js';
import { provisionAttestedTre, registerOverMqtt } from './tpm-tre.js';

// From src/ (vitest) and dist/ alike: the worker runs built.
const worker = fileURLToPath(new URL('../dist/reconnect-worker.js', import.meta.url));

export interface ReconnectOptions {
  agents: number;
  generators: number;
  /** The whole run gives up after this many seconds, with what it was waiting for. */
  timeoutSeconds: number;
  /** Keep each broker down at least this long (default 0: as long as the TRE takes to stop and start again). */
  downSeconds?: number;
  /** Readings each agent queues while the broker is down (default 4: one hour at 15-minute intervals). */
  backlog?: number;
  /** Run the mosquitto baseline (default true). */
  baseline?: boolean;
  /** Profile the restarted TRE (default true). */
  profile?: boolean;
}

const INTERVAL_MINUTES = 15;
/** Agents of one generator starting at once (not yet trusted) in the initial connect. */
const START_CONCURRENCY = 32;

/**
 * A free loopback port below the kernel's ephemeral range. Agents retry a stopped broker thousands
 * of times; a connect to a port nobody listens on that the kernel gives the same port as its
 * source is a TCP self-connect, which then holds the port and the broker cannot listen again.
 */
async function freeListenPort(): Promise<number> {
  const [low] = (
    existsSync('/proc/sys/net/ipv4/ip_local_port_range')
      ? readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
      : '32768 60999'
  )
    .trim()
    .split(/\s+/)
    .map(Number);
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * Math.max(1, (low ?? 32_768) - 10_000));
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  return freePort();
}

/** CPU seconds (user + system, all threads) a process has used, from /proc (clock ticks of 10 ms). */
function cpuSecondsOf(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** The pid of the swtpm serving `port` (Swtpm does not say), from /proc. */
function swtpmPid(port: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.startsWith('swtpm') && cmd.includes(`port=${port},`)) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

const monotonicMs = () => Number(process.hrtime.bigint() / 1000n) / 1000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What was started, stopped in reverse order at the end (and anything started after that at once). */
class Resources {
  private readonly stops: (() => Promise<unknown>)[] = [];
  private closed = false;

  async add<T>(thing: T, stop: (t: T) => Promise<unknown>): Promise<T> {
    if (this.closed) {
      await stop(thing).catch(() => {});
      throw new Error('stopped');
    }
    this.stops.push(() => stop(thing));
    return thing;
  }

  async closeAll(): Promise<void> {
    this.closed = true;
    for (const stop of this.stops.reverse()) await stop().catch(() => {});
  }
}

/** The load-generator processes of one broker, each with its share of agents. */
class Generators {
  private readonly latest = new Map<ChildProcess, { trusted: number; drained: number; total: number }>();
  private readonly exited = new Set<ChildProcess>();

  private constructor(readonly children: ChildProcess[]) {
    for (const c of children) {
      c.on('message', (m: WorkerMessage) => {
        if (m.type === 'progress') this.latest.set(c, m);
      });
      c.once('exit', () => this.exited.add(c));
    }
  }

  static async fork(
    dir: string,
    tag: string,
    base: Omit<ReconnectJob, 'agents'>,
    agents: ReconnectJob['agents'],
    generators: number,
  ): Promise<Generators> {
    const share = Math.ceil(agents.length / generators);
    const children: ChildProcess[] = [];
    for (let g = 0; g * share < agents.length; g++) {
      const file = join(dir, `job-${tag}-${g}.json`);
      const job: ReconnectJob = { ...base, agents: agents.slice(g * share, (g + 1) * share) };
      await writeFile(file, JSON.stringify(job));
      children.push(fork(worker, [file], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
    }
    return new Generators(children);
  }

  /** Sums of the last progress reports. */
  progress(): { trusted: number; drained: number; total: number } {
    const sum = { trusted: 0, drained: 0, total: 0 };
    for (const p of this.latest.values()) {
      sum.trusted += p.trusted;
      sum.drained += p.drained;
      sum.total += p.total;
    }
    return sum;
  }

  /** Resolves with each generator's first message of `type`; rejects when one exits before sending it. */
  all<T extends WorkerMessage['type']>(
    type: T,
    onTick?: () => void,
  ): Promise<Extract<WorkerMessage, { type: T }>[]> {
    const ticker = onTick ? setInterval(onTick, 5_000) : undefined;
    return Promise.all(
      this.children.map(
        (c) =>
          new Promise<Extract<WorkerMessage, { type: T }>>((resolve, reject) => {
            const onMessage = (m: WorkerMessage) => {
              if (m.type !== type) return;
              c.removeListener('message', onMessage);
              c.removeListener('exit', onExit);
              resolve(m as Extract<WorkerMessage, { type: T }>);
            };
            const onExit = (code: number | null) =>
              reject(new Error(`a load generator exited (${code}) before "${type}"`));
            c.on('message', onMessage);
            c.once('exit', onExit);
          }),
      ),
    ).finally(() => clearInterval(ticker));
  }

  send(m: 'queue' | 'stop'): void {
    for (const c of this.children) if (!this.exited.has(c)) c.send(m);
  }

  async stop(): Promise<void> {
    const alive = this.children.filter((c) => !this.exited.has(c) && c.exitCode === null);
    await Promise.all(
      alive.map(
        (c) =>
          new Promise<void>((resolve) => {
            const kill = setTimeout(() => c.kill('SIGKILL'), 15_000);
            c.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            c.send('stop');
          }),
      ),
    );
  }
}

interface Side {
  name: string;
  downMs: number;
  /** Per agent, from the broker listening again: trusted (TRE: re-attested), outbox empty. */
  trustedMs: number[];
  committedMs: number[];
  /** Per agent: its successful attempt, from its connect to trusted (the broker's share, without the backoff). */
  attemptMs: number[];
  attempts: number;
  failures: Map<string, number>;
  refused: Map<string, number>;
  initialSeconds: number;
  /** CPU seconds from listening again to the last 'done', by process (generators: to their last backlog). */
  cpu: Record<string, number>;
}

function countBy(items: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return new Map([...m.entries()].sort((a, b) => b[1] - a[1]));
}

const top = (m: Map<string, number>, n = 5) =>
  m.size === 0
    ? 'none'
    : [...m.entries()]
        .slice(0, n)
        .map(([k, v]) => `${v} x ${k}`)
        .join('; ');

function sideOf(
  name: string,
  reports: AgentReport[],
  stoppedAt: number,
  listenAt: number,
  initialSeconds: number,
  cpu: Record<string, number>,
): Side {
  const sorted = (xs: number[]) => xs.sort((a, b) => a - b);
  return {
    name,
    downMs: listenAt - stoppedAt,
    trustedMs: sorted(reports.map((r) => r.trustedAt - listenAt)),
    committedMs: sorted(reports.map((r) => r.drainedAt - listenAt)),
    attemptMs: sorted(reports.map((r) => r.trustedAt - r.trustedAttemptAt)),
    attempts: reports.reduce((n, r) => n + r.attempts.filter((t) => t >= listenAt).length, 0),
    // Ports and addresses vary per attempt; the reason does not.
    failures: countBy(
      reports.flatMap((r) =>
        r.failures.filter(([t]) => t >= listenAt).map(([, why]) => why.replace(/[\d.:]+\d/g, 'N')),
      ),
    ),
    refused: countBy(reports.flatMap((r) => r.refused)),
    initialSeconds,
    cpu,
  };
}

const pct = (xs: number[]) =>
  [percentile(xs, 50), percentile(xs, 99), xs[xs.length - 1] ?? Number.NaN]
    .map((x) => Math.round(x))
    .join(' / ');

const cpuLine = (s: Side) =>
  Object.entries(s.cpu)
    .map(([k, v]) => `${k} ${v.toFixed(1)}`)
    .join(', ');

const failedAttempts = (s: Side) => [...s.failures.values()].reduce((a, b) => a + b, 0);

/**
 * Self time of a `.cpuprofile` between two CLOCK_MONOTONIC instants (V8 stamps samples with the
 * same clock as `process.hrtime`): busy time and the components, as cpu-profile.ts summarises them.
 */
function profileWindow(file: string, fromMs: number, toMs: number, scratch: string) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
    startTime: number;
    endTime: number;
    samples: number[];
    timeDeltas: number[];
  };
  const idle = new Set(p.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
  // Samples inside hardware's Tpm.quote (tpm2-tss through koffi).
  const inQuote = new Set<number>();
  const mark = (id: number) => {
    inQuote.add(id);
    for (const c of byId.get(id)?.children ?? []) mark(c);
  };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  for (const n of p.nodes)
    if (n.callFrame.functionName === 'quote' && /hardware\/dist\/tpm\/tpm\.js$/.test(n.callFrame.url))
      mark(n.id);
  const kept: number[] = [];
  const deltas: number[] = [];
  const quotes: number[] = [];
  let quoting = 0;
  let t = p.startTime;
  let busyUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t / 1000 < fromMs || t / 1000 > toMs) continue;
    const id = p.samples[i]!;
    kept.push(id);
    deltas.push(kept.length === 1 ? 0 : (p.timeDeltas[i] ?? 0));
    if (!idle.has(id)) busyUs += p.timeDeltas[i] ?? 0;
    if (inQuote.has(id)) quoting += p.timeDeltas[i] ?? 0;
    else if (quoting > 0) {
      quotes.push(quoting / 1000);
      quoting = 0;
    }
  }
  if (quoting > 0) quotes.push(quoting / 1000);
  quotes.sort((a, b) => a - b);
  // A profile of the window alone (DevTools opens it too).
  writeFileSync(
    scratch,
    JSON.stringify({
      nodes: p.nodes,
      startTime: fromMs * 1000,
      endTime: toMs * 1000,
      samples: kept,
      timeDeltas: deltas,
    }),
  );
  return {
    busyMs: busyUs / 1000,
    windowMs: toMs - fromMs,
    covered: p.startTime / 1000 <= fromMs && p.endTime / 1000 >= toMs,
    components: summariseProfile(scratch, 10),
    /**
     * Stretches of consecutive samples inside Tpm.quote, about one per quote (two back to back count
     * as one): the whole quote when it is a synchronous call, its synchronous rest (PCR read,
     * parsing) when the quote itself runs on koffi's worker thread.
     */
    quotes: {
      count: quotes.length,
      totalMs: quotes.reduce((a, b) => a + b, 0),
      p50Ms: percentile(quotes, 50),
      maxMs: quotes[quotes.length - 1] ?? Number.NaN,
    },
  };
}

/** The JSON log lines of a TRE at warn and above, counted by message (and reason). */
function logSummary(log: string): Map<string, number> {
  const lines: string[] = [];
  for (const raw of log.split('\n')) {
    if (!raw.trim()) continue;
    try {
      const l = JSON.parse(raw) as { msg?: string; reason?: string; err?: string };
      lines.push([l.msg, l.reason ?? l.err].filter(Boolean).join(': '));
    } catch {
      lines.push(raw.slice(0, 80));
    }
  }
  return countBy(lines);
}

export async function runReconnect(
  opts: ReconnectOptions,
  progress: (line: string) => void = () => {},
): Promise<BenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-reconnect-'));
  // Agent journals in memory where there is one (as the simulator's): each agent fsyncs its outbox
  // per reading, and on a real deployment each does so on its own disk, not 1,250 on one.
  const agentRoot = await mkdtemp(join(memoryTmpdir(), 'bench-reconnect-agents-'));
  const resources = new Resources();
  let phase = 'setting up';
  let status = (): string => '';
  let timer: NodeJS.Timeout | undefined;
  try {
    const work = measure();
    work.catch(() => {}); // raced against the timeout below
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `reconnect: gave up after ${opts.timeoutSeconds} s (--timeout) while ${phase}${status() ? ` (${status()})` : ''}`,
            ),
          ),
        opts.timeoutSeconds * 1000,
      );
    });
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
    await resources.closeAll();
    await rm(dir, { recursive: true, force: true });
    await rm(agentRoot, { recursive: true, force: true });
  }

  async function measure(): Promise<BenchResult> {
    const backlog = opts.backlog ?? 4;
    const loadAtStart = loadavg();
    const regDir = join(dir, 'regulator');
    const { ca, tre: devTre } = await CertificateAuthority.initForDevelopment(regDir);
    progress(`regulator: PKI and ${opts.agents} meter certificates`);
    const { keyPem, certs, ids } = await meterCertificates(regDir, opts.agents, 'r');
    const agents = ids.map((meterId, i) => ({ meterId, cert: certs[i]! }));
    const caPem = await readFile(ca.paths.caCert, 'utf8');
    // Readings of the last closed intervals: one before the outage, `backlog` queued during it.
    const step = INTERVAL_MINUTES * 60_000;
    const firstIntervalStart = (Math.floor(Date.now() / step) - 1 - backlog) * step;

    phase = 'enrolling the TRE (swtpm, AK, sealed keys, whitelist)';
    progress('TRE: swtpm, AK certified, TLS and data keys sealed to the measurement, whitelist signed');
    const profileDir = opts.profile === false ? undefined : join(dir, 'profile');
    const att = await provisionAttestedTre(ca, dir, { profileDir });
    await resources.add(att.swtpm, (s) => s.stop());
    const port = await freeListenPort();
    phase = 'starting the TRE';
    const first = await resources.add(await att.start(port), (t) => t.stop());
    phase = 'registering households';
    progress(`regulator: registering ${opts.agents} households (signed registry update over MQTT)`);
    await registerOverMqtt(
      ca,
      `mqtts://127.0.0.1:${port}`,
      ids.map((meterId, i) => ({
        meterId,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 10_000,
        account: `a${i}`,
      })),
    );

    const base = (mode: ReconnectJob['mode'], p: number): Omit<ReconnectJob, 'agents'> => ({
      mode,
      port: p,
      caPem,
      crlPath: ca.paths.crl,
      policyJws: mode === 'tre' ? att.policyJws : undefined,
      keyPem,
      stateDir: join(agentRoot, mode),
      firstIntervalStart,
      intervalMinutes: INTERVAL_MINUTES,
      backlog,
      startConcurrency: START_CONCURRENCY,
    });

    /** Connects every agent, stops the broker, queues the backlog, starts the broker, waits for every backlog. */
    const storm = async (
      name: string,
      gens: Generators,
      stop: () => Promise<void>,
      start: () => Promise<void>,
      minDownMs: number,
      /** CPU seconds so far of the broker's processes, by name. */
      brokerCpu: () => Record<string, number>,
    ) => {
      const t0 = monotonicMs();
      phase = `${name}: connecting ${opts.agents} agents`;
      status = () => {
        const p = gens.progress();
        return `${p.trusted}/${opts.agents} trusted, ${p.drained} with an empty outbox`;
      };
      progress(`${name}: connecting ${opts.agents} agents from ${gens.children.length} generators`);
      await gens.all('ready', () => progress(`${name}: initial connect: ${status()}`));
      const initialSeconds = (monotonicMs() - t0) / 1000;
      progress(
        `${name}: all ${opts.agents} agents trusted, first reading settled (${initialSeconds.toFixed(1)} s)`,
      );
      phase = `${name}: stopping`;
      const stoppedAt = monotonicMs();
      await stop();
      const exitedAt = monotonicMs();
      gens.send('queue');
      phase = `${name}: agents queueing their backlog`;
      const queuedBy = await gens.all('queued');
      const queued = queuedBy.reduce((n, m) => n + m.queued, 0);
      const seconds = (t: number) => ((t - stoppedAt) / 1000).toFixed(1);
      const closed = seconds(Math.max(...queuedBy.map((m) => m.closedAt)));
      const recorded = seconds(Math.max(...queuedBy.map((m) => m.queuedAt)));
      progress(
        `${name}: exited ${seconds(exitedAt)} s after SIGTERM, every agent offline at ${closed} s, ${queued} readings queued at ${recorded} s`,
      );
      const wait = stoppedAt + minDownMs - monotonicMs();
      if (wait > 0) await sleep(wait);
      phase = `${name}: starting again`;
      const startedAt = monotonicMs();
      await start();
      const listenAt = monotonicMs();
      const cpuAtListen = brokerCpu();
      progress(`${name}: listening again after ${((listenAt - stoppedAt) / 1000).toFixed(1)} s down`);
      phase = `${name}: waiting for every agent to reconnect and its backlog to be acknowledged`;
      status = () => {
        const p = gens.progress();
        return `+${((monotonicMs() - listenAt) / 1000).toFixed(0)} s: ${p.trusted}/${opts.agents} trusted again, ${p.drained} backlogs acknowledged`;
      };
      const done = await gens.all('done', () => progress(`${name}: ${status()}`));
      const cpuAtDone = brokerCpu();
      await gens.stop();
      return {
        reports: done.flatMap((m) => m.agents),
        cpu: {
          ...Object.fromEntries(
            Object.entries(cpuAtDone).map(([k, v]) => [k, v - (cpuAtListen[k] ?? Number.NaN)]),
          ),
          [`${gens.children.length} generators`]: done.reduce((n, m) => n + m.cpuMs, 0) / 1000,
        } as Record<string, number>,
        stoppedAt,
        exitedAt,
        startedAt,
        listenAt,
        queued,
        /** Seconds after the stop: every agent offline; every backlog recorded. */
        offlineSeconds: Number(closed),
        queuedSeconds: Number(recorded),
        initialSeconds,
      };
    };

    // The TRE.
    const treGens = await resources.add(
      await Generators.fork(dir, 'tre', base('tre', port), agents, opts.generators),
      (g) => g.stop(),
    );
    let second: Awaited<ReturnType<typeof att.start>> | undefined;
    const tpmPid = swtpmPid(att.swtpm.port);
    const tre = await storm(
      'TRE',
      treGens,
      () => first.stop(),
      async () => {
        second = await resources.add(await att.start(port), (t) => t.stop());
      },
      (opts.downSeconds ?? 0) * 1000,
      () => ({ TRE: cpuSecondsOf(second?.child.pid), swtpm: cpuSecondsOf(tpmPid) }),
    );
    phase = 'TRE: stopping, counting its store';
    await second!.stop();
    const treLog = logSummary(second!.log());
    const stored = await att.countStoredReadings();
    const treSide = sideOf('TRE', tre.reports, tre.stoppedAt, tre.listenAt, tre.initialSeconds, tre.cpu);
    let profile: ReturnType<typeof profileWindow> | undefined;
    if (profileDir) {
      const file = (await readdir(profileDir)).find((f) => f.includes(`.${second!.child.pid}.`));
      if (file) {
        profile = profileWindow(
          join(profileDir, file),
          tre.listenAt,
          // The last backlog committed, as its agent saw it.
          tre.listenAt + (treSide.committedMs[treSide.committedMs.length - 1] ?? 0),
          join(dir, 'window.cpuprofile'),
        );
        const keep = process.env.TRE_BENCH_PROFILE_OUT;
        if (keep) {
          await mkdir(keep, { recursive: true });
          await copyFile(join(profileDir, file), join(keep, `reconnect-tre-${Date.now()}.cpuprofile`));
          await copyFile(
            join(dir, 'window.cpuprofile'),
            join(keep, `reconnect-tre-storm-${Date.now()}.cpuprofile`),
          );
        }
      }
    }

    // The baseline: mosquitto, TLS only, the same agents, schedule and backlog, down as long.
    let mq: Side | undefined;
    let mqTimes = { offlineSeconds: Number.NaN, queuedSeconds: Number.NaN };
    if (opts.baseline !== false) {
      const mqPort = await freeListenPort();
      phase = 'mosquitto: starting';
      let broker = await resources.add(await startMosquitto(dir, devTre, mqPort), (m) => m.stop());
      const mqGens = await resources.add(
        await Generators.fork(dir, 'mosquitto', base('mosquitto', mqPort), agents, opts.generators),
        (g) => g.stop(),
      );
      const run = await storm(
        'mosquitto',
        mqGens,
        () => broker.stop(),
        async () => {
          broker = await resources.add(await startMosquitto(dir, devTre, mqPort), (m) => m.stop());
        },
        treSide.downMs,
        () => ({ mosquitto: cpuSecondsOf(broker.process.pid) }),
      );
      await broker.stop();
      mqTimes = run;
      mq = sideOf('mosquitto', run.reports, run.stoppedAt, run.listenAt, run.initialSeconds, run.cpu);
    }
    const loadAtEnd = loadavg();

    const expected = opts.agents * (1 + backlog);
    const last = (xs: number[]) => xs[xs.length - 1] ?? Number.NaN;
    const row = (s: Side, label: string) => [
      label,
      opts.agents,
      Math.round(s.downMs),
      Math.round(last(s.trustedMs)),
      Math.round(percentile(s.trustedMs, 50)),
      Math.round(percentile(s.trustedMs, 99)),
      Math.round(last(s.committedMs)),
      Math.round(percentile(s.committedMs, 50)),
      Math.round(percentile(s.committedMs, 99)),
      s.attempts,
      failedAttempts(s),
    ];
    const rows = [row(treSide, 'TRE (swtpm attestation, durable backlog)')];
    if (mq) rows.push(row(mq, 'mosquitto (TLS only, baseline)'));
    const ratio = (a: number, b: number) => (b > 0 ? a / b : Number.NaN);
    const summary: Record<string, number> = {
      agents: opts.agents,
      backlogPerAgent: backlog,
      downMs: Math.round(treSide.downMs),
      treStopMs: Math.round(tre.exitedAt - tre.stoppedAt),
      treStartToListeningMs: Math.round(tre.listenAt - tre.startedAt),
      treAllReattestedMs: Math.round(last(treSide.trustedMs)),
      treReattestedP50Ms: Math.round(percentile(treSide.trustedMs, 50)),
      treReattestedP99Ms: Math.round(percentile(treSide.trustedMs, 99)),
      treAllCommittedMs: Math.round(last(treSide.committedMs)),
      treCommittedP50Ms: Math.round(percentile(treSide.committedMs, 50)),
      treCommittedP99Ms: Math.round(percentile(treSide.committedMs, 99)),
      treStoredReadings: stored,
      expectedReadings: expected,
      treAttemptP50Ms: Math.round(percentile(treSide.attemptMs, 50)),
      treAttemptP99Ms: Math.round(percentile(treSide.attemptMs, 99)),
      treRefusedReadings: [...treSide.refused.values()].reduce((a, b) => a + b, 0),
      ...(mq
        ? {
            mosquittoAllReconnectedMs: Math.round(last(mq.trustedMs)),
            mosquittoAllAcknowledgedMs: Math.round(last(mq.committedMs)),
            mosquittoReconnectedP50Ms: Math.round(percentile(mq.trustedMs, 50)),
            mosquittoReconnectedP99Ms: Math.round(percentile(mq.trustedMs, 99)),
            mosquittoAttemptP50Ms: Math.round(percentile(mq.attemptMs, 50)),
            mosquittoAttemptP99Ms: Math.round(percentile(mq.attemptMs, 99)),
            ratioAllReconnected: round2(ratio(last(treSide.trustedMs), last(mq.trustedMs))),
            ratioAllCommitted: round2(ratio(last(treSide.committedMs), last(mq.committedMs))),
          }
        : {}),
      ...(profile
        ? {
            treBusyMsDuringStorm: Math.round(profile.busyMs),
            treEventLoopMsInQuoteDuringStorm: Math.round(profile.quotes.totalMs),
            treQuoteStretchesDuringStorm: profile.quotes.count,
          }
        : {}),
      treCpuMsPerAgent: round2((1000 * (treSide.cpu.TRE ?? Number.NaN)) / opts.agents),
      ...(mq
        ? { mosquittoCpuMsPerAgent: round2((1000 * (mq.cpu.mosquitto ?? Number.NaN)) / opts.agents) }
        : {}),
    };
    const notes = [
      `reconnect schedule, both brokers: TreLink's own backoff with meter-agent run's settings (base 1 s, cap 60 s, each wait uniform in [c/2, c] with c = min(60 s, 1 s x 2^failures), reset once trusted), MQTT connect timeout 10 s doubling after each failure up to 60 s; against the TRE each agent then verifies a TPM quote (attestation timeout 10 s), against mosquitto TreLink runs with trustWithoutAttestation ("reconnected" = CONNACK + SUBACK of the agent's subscriptions)`,
      `backlog: ${backlog} readings per agent (one hour at meter-agent run's default 15-minute interval), recorded by the agent's HouseholdAgent into its fsynced outbox while the broker was down, then sent as QoS1 publishes (TreLink window 64); "committed" = the agent's outbox empty, every reading PUBACKed (the TRE commits before its PUBACK; mosquitto has no subscriber and drops them)`,
      `TRE store after the run: ${stored} in-bounds readings, expected ${expected} (${opts.agents} agents x (1 before the outage + ${backlog} queued))${stored === expected ? '' : ' -- MISMATCH'}; readings refused: TRE ${top(treSide.refused)}${mq ? `, mosquitto ${top(mq.refused)}` : ''}`,
      `TRE restart: SIGTERM -> exited ${((tre.exitedAt - tre.stoppedAt) / 1000).toFixed(1)} s, start -> listening ${((tre.listenAt - tre.startedAt) / 1000).toFixed(1)} s (measured start: hashing the release, unsealing its keys); broker down ${(treSide.downMs / 1000).toFixed(1)} s${mq ? ` (mosquitto kept down ${(mq.downMs / 1000).toFixed(1)} s, at least as long)` : ''}; every agent offline / every backlog recorded, s after SIGTERM: TRE ${tre.offlineSeconds} / ${tre.queuedSeconds}${mq ? `, mosquitto ${mqTimes.offlineSeconds} / ${mqTimes.queuedSeconds}` : ''}`,
      ...(mq
        ? [
            `ratio TRE / mosquitto: all reconnected ${ratio(last(treSide.trustedMs), last(mq.trustedMs)).toFixed(2)}, all backlogs committed ${ratio(last(treSide.committedMs), last(mq.committedMs)).toFixed(2)}`,
          ]
        : []),
      `the successful attempt alone (connect, TLS, CONNECT, SUBSCRIBE and, TRE, attestation), p50 / p99 / max ms: TRE ${pct(treSide.attemptMs)}${mq ? `; mosquitto ${pct(mq.attemptMs)}` : ''}`,
      `failed attempts (begun after the restart): TRE ${top(treSide.failures)}${mq ? `; mosquitto ${top(mq.failures)}` : ''}`,
      `TRE warnings logged after the restart: ${top(treLog)}`,
      ...(profile
        ? [
            `TRE CPU from listening to the last backlog committed: busy ${(profile.busyMs / 1000).toFixed(1)} s of ${(profile.windowMs / 1000).toFixed(1)} s${profile.covered ? '' : ' (profile did not cover the whole window)'}, of which ${(profile.quotes.totalMs / 1000).toFixed(1)} s on the event loop inside Tpm.quote (${profile.quotes.count} stretches, about one per quote, for ${treSide.attempts} connection attempts; p50 ${profile.quotes.p50Ms.toFixed(1)} ms, max ${profile.quotes.maxMs.toFixed(0)} ms); self time: ${profile.components.map((c) => `${c.component} ${(100 * c.share).toFixed(0)} %`).join(', ')}`,
          ]
        : []),
      `CPU seconds from listening again to the last backlog acknowledged (two cores, shared): TRE run ${cpuLine(treSide)} in ${(last(treSide.committedMs) / 1000).toFixed(1)} s${mq ? `; mosquitto run ${cpuLine(mq)} in ${(last(mq.committedMs) / 1000).toFixed(1)} s` : ''}; broker CPU per agent (reconnect + backlog): TRE ${summary.treCpuMsPerAgent!.toFixed(1)} ms${mq ? `, mosquitto ${summary.mosquittoCpuMsPerAgent!.toFixed(2)} ms` : ''}`,
      `initial connect (not measured; ${START_CONCURRENCY} agents starting at a time per generator): TRE ${treSide.initialSeconds.toFixed(1)} s${mq ? `, mosquitto ${mq.initialSeconds.toFixed(1)} s` : ''}`,
      `load average (1/5/15 min) at start ${loadAtStart.map((l) => l.toFixed(1)).join('/')}, at end ${loadAtEnd.map((l) => l.toFixed(1)).join('/')}`,
    ];
    return {
      name: 'reconnect',
      description: `${opts.agents} agents (${Math.min(opts.generators, opts.agents)} load-generator processes) reconnecting to a restarted broker with ${backlog} queued readings each; times from the moment it listens again`,
      columns: [
        'broker',
        'agents',
        'down ms',
        'all reconnected ms',
        'reconnected p50 ms',
        'reconnected p99 ms',
        'all committed ms',
        'committed p50 ms',
        'committed p99 ms',
        'attempts',
        'failed attempts',
      ],
      rows,
      summary,
      notes,
    };
  }
}
