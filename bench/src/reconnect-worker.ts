/**
 * A load-generator process for the `reconnect` benchmark: its share of meter agents, each the real
 * agent code as `meter-agent run` wires it (TreLink with its own backoff, the durable Outbox, the
 * HouseholdAgent that turns a closed interval into a reading, and, against the TRE, the TPM-quote
 * attestor with the regulator's whitelist and CRL), without the serial meter: the intervals are
 * recorded by this process.
 *
 * Argument: a JSON job file (see `Job`). Messages to the parent: `progress` every second, `ready`
 * once every agent is trusted and its first reading settled, `queued` after the backlog is in every
 * outbox, `done` once every agent is trusted again and its outbox is empty. From the parent:
 * `queue` (the broker is down: record the backlog), `stop`.
 *
 * Times are CLOCK_MONOTONIC milliseconds (`process.hrtime`), comparable across processes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  HouseholdAgent,
  loadAttestationPolicy,
  Outbox,
  readRegulatorCrl,
  type TreAttestor,
  TreLink,
  tpmQuoteAttestor,
  trustWithoutAttestation,
} from '@tre/meter-agent';
import { systemClock } from '@tre/protocol';

export interface ReconnectJob {
  /** `tre`: attest with the TPM quote before sending; `mosquitto`: TLS only (no attestation). */
  mode: 'tre' | 'mosquitto';
  port: number;
  caPem: string;
  /** The regulator's CRL file (re-read on every attestation, as the daemon does). */
  crlPath: string;
  /** The regulator-signed whitelist (JWS), for `tre`. */
  policyJws?: string;
  keyPem: string;
  agents: { meterId: string; cert: string }[];
  stateDir: string;
  /** Start of the first interval (ms); the first is sent before the outage, the next `backlog` during it. */
  firstIntervalStart: number;
  intervalMinutes: 15 | 30;
  backlog: number;
  /** Agents starting at once (not yet trusted) in this process during the initial connect. */
  startConcurrency: number;
}

export interface AgentReport {
  /** When the agent was trusted again after the outage (TRE: re-attested; mosquitto: CONNACK + SUBACK). */
  trustedAt: number;
  /** When the attempt that ended trusted began (its connect, TLS, CONNECT, SUBSCRIBE, attestation). */
  trustedAttemptAt: number;
  /** When its outbox became empty after the outage (every queued reading PUBACKed). */
  drainedAt: number;
  /** Connection attempts since the backlog was queued (monotonic ms each). */
  attempts: number[];
  /** Attempts that failed since the backlog was queued: [when the attempt began (ms), why]. */
  failures: [number, string][];
  /** Refusal receipts (reason) for its readings. */
  refused: string[];
}

export type WorkerMessage =
  | { type: 'progress'; trusted: number; drained: number; total: number }
  | { type: 'ready' }
  /** Monotonic ms: the parent's `queue` received, every agent seen offline, the backlog recorded. */
  | { type: 'queued'; queued: number; receivedAt: number; closedAt: number; queuedAt: number }
  /** `cpuMs`: this process's CPU time (user + system) from queueing the backlog to the last one acknowledged. */
  | { type: 'done'; agents: AgentReport[]; cpuMs: number };

export const monotonicMs = () => Number(process.hrtime.bigint() / 1000n) / 1000;

const job = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ReconnectJob;
const send = (m: WorkerMessage) => process.send?.(m);

async function attestorFor(j: ReconnectJob): Promise<TreAttestor> {
  if (j.mode === 'mosquitto') return trustWithoutAttestation;
  return tpmQuoteAttestor({
    regulatorRootPem: j.caPem,
    regulatorCrlPem: () => readRegulatorCrl(j.crlPath),
    policy: await loadAttestationPolicy(j.policyJws!, j.caPem),
    clock: systemClock,
  });
}

class BenchAgent {
  readonly outbox: Outbox;
  readonly link: TreLink;
  readonly agent: HouseholdAgent;
  /** 'initial' until the backlog is queued, then 'outage' (and the reconnect). */
  phase: 'initial' | 'outage' = 'initial';
  trustedAt: number | undefined;
  /** When the attempt that ended trusted began. */
  trustedAttemptAt: number | undefined;
  drainedAt: number | undefined;
  readonly attempts: number[] = [];
  readonly failures: [number, string][] = [];
  readonly refused: string[] = [];
  private interval = 0;

  constructor(
    readonly meterId: string,
    cert: string,
    attestor: TreAttestor,
    private readonly onChange: (a: BenchAgent) => void,
  ) {
    const stateDir = join(job.stateDir, meterId);
    this.outbox = new Outbox(join(stateDir, 'outbox.jsonl'));
    this.link = new TreLink({
      meterId,
      endpoints: [`mqtts://127.0.0.1:${job.port}`],
      tls: { key: job.keyPem, cert, ca: job.caPem },
      outbox: this.outbox,
      clock: systemClock,
      attestor,
      // As `meter-agent run` (agent.example.yaml); backoff, receipt timeout and window are TreLink's defaults.
      attestEveryMs: 15 * 60_000,
    });
    this.agent = new HouseholdAgent({
      link: this.link,
      clock: systemClock,
      stateDir,
      mode: 'never',
      randomId: () => `${meterId}-${this.interval}`,
      writeStatus: false,
    });
    let previous = this.link.state;
    this.link.on('state', (state, detail) => {
      const before = previous;
      previous = state;
      if (this.phase !== 'outage') {
        this.onChange(this);
        return;
      }
      const t = monotonicMs();
      const attempt = this.attempts[this.attempts.length - 1] ?? t;
      if (state === 'connecting') this.attempts.push(t);
      // A failed attestation says 'untrusted' twice (the verdict, then the closed connection): once here.
      else if (state === 'offline' || (state === 'untrusted' && before !== 'untrusted'))
        this.failures.push([attempt, `${state}: ${detail ?? ''}`]);
      else if (state === 'trusted' && this.trustedAt === undefined) {
        this.trustedAt = t;
        this.trustedAttemptAt = attempt;
      }
      this.checkDrained();
      this.onChange(this);
    });
    this.link.on('receipt', (receipt) => {
      if (receipt.status === 'refused') this.refused.push(receipt.reason ?? 'refused');
      this.checkDrained();
      this.onChange(this);
    });
  }

  private checkDrained(): void {
    if (this.phase === 'outage' && this.trustedAt !== undefined && this.drainedAt === undefined)
      if (this.outbox.depth === 0) this.drainedAt = monotonicMs();
  }

  /** The next interval closes: the agent queues its reading (durably) and sends it when trusted. */
  recordInterval(): void {
    const i = this.interval++;
    const lengthMs = job.intervalMinutes * 60_000;
    const energyWh = 100;
    this.agent.recordInterval({
      intervalStart: new Date(job.firstIntervalStart + i * lengthMs).toISOString(),
      intervalMinutes: job.intervalMinutes,
      importWh: energyWh,
      exportWh: 0,
      importRegisterWh: 1_000_000 + energyWh * (i + 1),
      exportRegisterWh: 0,
    });
  }

  report(): AgentReport {
    return {
      trustedAt: this.trustedAt!,
      trustedAttemptAt: this.trustedAttemptAt!,
      drainedAt: this.drainedAt!,
      attempts: this.attempts,
      failures: this.failures,
      refused: this.refused,
    };
  }

  async stop(): Promise<void> {
    this.agent.stop();
    await this.link.stop();
    this.outbox.close();
  }
}

const attestor = await attestorFor(job);
const agents: BenchAgent[] = [];
let next = 0;
let starting = 0;
/** Agents started in the initial connect and not trusted yet. */
const startingSet = new Set<BenchAgent>();
let phase: 'initial' | 'ready' | 'outage' | 'done' = 'initial';
let cpuAtQueue: NodeJS.CpuUsage | undefined;

const trustedCount = () =>
  phase === 'outage' || phase === 'done'
    ? agents.filter((a) => a.trustedAt !== undefined).length
    : agents.filter((a) => a.link.state === 'trusted').length;
const drainedCount = () =>
  phase === 'outage' || phase === 'done'
    ? agents.filter((a) => a.drainedAt !== undefined).length
    : agents.filter((a) => a.link.state === 'trusted' && a.outbox.depth === 0).length;

function onChange(a: BenchAgent): void {
  if (phase === 'initial') {
    if (a.link.state === 'trusted' && startingSet.delete(a)) {
      starting--;
      startMore();
    }
    if (
      next === job.agents.length &&
      agents.every((x) => x.link.state === 'trusted' && x.outbox.depth === 0)
    ) {
      phase = 'ready';
      send({ type: 'ready' });
    }
  } else if (phase === 'outage' && agents.every((x) => x.drainedAt !== undefined)) {
    phase = 'done';
    const cpu = process.cpuUsage(cpuAtQueue);
    send({ type: 'done', agents: agents.map((x) => x.report()), cpuMs: (cpu.user + cpu.system) / 1000 });
  }
}

function startMore(): void {
  while (starting < job.startConcurrency && next < job.agents.length) {
    const { meterId, cert } = job.agents[next++]!;
    const a = new BenchAgent(meterId, cert, attestor, onChange);
    agents.push(a);
    a.recordInterval(); // the reading before the outage
    startingSet.add(a);
    starting++;
    a.link.start();
  }
}

const ticker = setInterval(
  () =>
    send({ type: 'progress', trusted: trustedCount(), drained: drainedCount(), total: job.agents.length }),
  1_000,
);

process.on('message', async (m: string) => {
  if (m === 'queue') {
    const receivedAt = monotonicMs();
    // Every agent has seen its connection close (nothing in flight), then an hour of intervals closes.
    while (agents.some((a) => a.link.state === 'trusted' || a.link.state === 'attesting'))
      await new Promise((r) => setTimeout(r, 10));
    const closedAt = monotonicMs();
    let queued = 0;
    cpuAtQueue = process.cpuUsage();
    for (const a of agents) {
      a.phase = 'outage';
      for (let i = 0; i < job.backlog; i++) a.recordInterval();
      queued += a.outbox.depth;
    }
    phase = 'outage';
    send({ type: 'queued', queued, receivedAt, closedAt, queuedAt: monotonicMs() });
  } else if (m === 'stop') {
    clearInterval(ticker);
    await Promise.all(agents.map((a) => a.stop()));
    process.exit(0);
  }
});

startMore();
