/**
 * The agent's Prometheus metrics (prom-client) and its health endpoints, on a loopback HTTP
 * listener when `agent.yaml` has `metrics: { listen: 127.0.0.1:9465 }`: `/metrics`, `/healthz`
 * (the process answers) and `/readyz` (200 when the configuration is loaded, the meter port open
 * and the TRE link trusted, else 503; the checks as JSON). Values are read at each scrape from what
 * the reader, the outbox and the link already keep; nothing names the household, its meter, a bid
 * or a reading.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ReaderStats } from '@tre/hardware';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { LinkState, TreAttestor, TreLink } from './tre-link.js';
import { AGENT_VERSION } from './version.js';

const LINK_STATES: LinkState[] = ['connecting', 'attesting', 'trusted', 'untrusted', 'offline', 'stopped'];

export class AgentMetrics {
  readonly registry = new Registry();
  private verdict = { verdict: 'none', check: 'none' };
  private readonly verdicts = new Counter({
    name: 'meter_agent_tre_attestations_total',
    help: 'attestations of the TRE, by verdict (untrusted: by the check that failed)',
    labelNames: ['verdict', 'check'],
    registers: [this.registry],
  });
  private meterPortOpen = false;
  private link: TreLink | undefined;

  constructor() {
    new Gauge({
      name: 'meter_agent_build_info',
      help: 'the agent release running (its version as a label), always 1',
      labelNames: ['version'],
      registers: [this.registry],
    }).set({ version: AGENT_VERSION }, 1);
  }

  /** The attestor, its verdicts remembered (the last one) and counted. */
  observeAttestor(attestor: TreAttestor): TreAttestor {
    return async (session) => {
      const verdict = await attestor(session);
      this.verdict = verdict.trusted
        ? { verdict: 'trusted', check: 'none' }
        : { verdict: 'untrusted', check: verdict.check };
      this.verdicts.inc(this.verdict);
      return verdict;
    };
  }

  /** Starts reading the running agent's parts. */
  watch(parts: { link: TreLink; reader: { readonly stats: ReaderStats } }): void {
    const { link, reader } = parts;
    this.link = link;
    const registers = [this.registry];
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    const total = (name: string, help: string, read: (t: ReaderStats) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read(reader.stats));
        },
      });
    total(
      'meter_agent_meter_telegrams_total',
      'telegrams (SML files, mode C readouts) accepted from the meter',
      (t) => t.telegrams,
    );
    total(
      'meter_agent_meter_crc_errors_total',
      'telegrams refused for a CRC (mode C: BCC) mismatch',
      (t) => t.crcErrors,
    );
    total(
      'meter_agent_meter_rejected_total',
      'telegrams refused for another reason (cut off in the byte stream, no energy register, ...)',
      (t) => t.rejected,
    );
    total(
      'meter_agent_meter_skipped_lines_total',
      'malformed lines skipped in accepted telegrams',
      (t) => t.skippedLines,
    );
    gauge('meter_agent_meter_port_open', "1 while the meter's serial port is open", () =>
      this.meterPortOpen ? 1 : 0,
    );
    gauge(
      'meter_agent_outbox_depth',
      'readings and bids waiting in the on-disk outbox for the TRE',
      () => link.outboxDepth,
    );
    new Gauge({
      name: 'meter_agent_tre_link_state',
      help: 'the TRE link state: 1 for the current one, 0 for the others',
      labelNames: ['state'],
      registers,
      collect() {
        for (const state of LINK_STATES) this.set({ state }, link.state === state ? 1 : 0);
      },
    });
    const verdict: Gauge = new Gauge({
      name: 'meter_agent_tre_attestation_verdict',
      help: 'the last attestation verdict (verdict none: not attested yet), always 1',
      labelNames: ['verdict', 'check'],
      registers,
      collect: () => {
        verdict.reset();
        verdict.set(this.verdict, 1);
      },
    });
  }

  /** The meter port's state, as the reader reports it. */
  meterPort(state: 'open' | 'closed' | 'error'): void {
    this.meterPortOpen = state === 'open';
  }

  /** Whether the agent does its job: configuration loaded, meter port open, TRE link trusted. */
  readiness(): Record<string, boolean> {
    return { config: true, meterPort: this.meterPortOpen, treLink: this.link?.state === 'trusted' };
  }
}

/** `host:port` of `metrics.listen` (agent-config.ts checks the form). */
function hostAndPort(listen: string): [string, number] {
  const at = listen.lastIndexOf(':');
  return [listen.slice(0, at).replace(/^\[(.*)\]$/, '$1'), Number(listen.slice(at + 1))];
}

/** Serves `/metrics`, `/healthz` and `/readyz` on `listen`; resolves with the address once listening. */
export async function serveAgentMetrics(
  listen: string,
  metrics: AgentMetrics,
): Promise<{ address: AddressInfo; close(): Promise<void> }> {
  const routes: Record<string, () => Promise<[number, string, string]>> = {
    '/metrics': async () => [200, metrics.registry.contentType, await metrics.registry.metrics()],
    '/healthz': async () => [200, 'text/plain', 'ok\n'],
    '/readyz': async () => {
      const checks = metrics.readiness();
      const ready = Object.values(checks).every(Boolean);
      return [ready ? 200 : 503, 'application/json', `${JSON.stringify({ ready, checks })}\n`];
    },
  };
  const server = createServer((req, res) => {
    const route = req.method === 'GET' ? routes[(req.url ?? '/').split('?')[0]!] : undefined;
    (route ?? (async () => [404, 'text/plain', 'GET /metrics, /healthz or /readyz\n'] as const))().then(
      ([status, type, body]) => res.writeHead(status, { 'content-type': type }).end(body),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  collectDefaultMetrics({ register: metrics.registry }); // the process's: memory, CPU, event loop
  const [host, port] = hostAndPort(listen);
  server.listen(port, host);
  await once(server, 'listening');
  return {
    address: server.address() as AddressInfo,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}
