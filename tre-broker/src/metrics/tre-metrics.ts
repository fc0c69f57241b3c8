/**
 * The TRE's Prometheus metrics (prom-client). Most are read at each scrape from the totals the
 * services already keep (`stats`, the router's refusals, the broker's sessions); the broker's
 * traffic and the store's group commits are counted as they happen, from aedes' events and the
 * store's `onCommit`. No label or value names a party: messages are counted by topic family
 * (`parseTopic`), never by topic, and the privacy figures are totals over every group and
 * household since start.
 */
import { readFileSync } from 'node:fs';
import { parseTopic } from '@tre/protocol';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AttestationService } from '../attestation/attestation-service.js';
import type { MessageRouter } from '../broker/message-router.js';
import type { TlsMqttBroker } from '../broker/tls-mqtt-broker.js';
import type { JoinedCluster } from '../cluster/join-cluster.js';
import type { DemandResponseService } from '../demand-response/demand-response-service.js';
import type { MonitoringService } from '../monitoring/monitoring-service.js';
import type { Store } from '../store/store.js';

const TRE_VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/** What the metrics read: the running TRE's parts (`attestation` only with a TPM). */
export interface MeteredTre {
  broker: TlsMqttBroker;
  router: MessageRouter;
  store: Store;
  monitoring: MonitoringService;
  demandResponse: DemandResponseService;
  attestation?: AttestationService;
  /** This shard's link to the others, in a cluster of TREs. */
  cluster?: JoinedCluster;
}

/**
 * The family a topic is counted under, without its ids: `reading`, `inbox/receipt`,
 * `broadcast/tariff`; undefined for a topic outside the contract (aedes' `$SYS`).
 */
export function topicFamily(topic: string): string | undefined {
  const parsed = parseTopic(topic);
  if (!parsed) return undefined;
  if (parsed.scope === 'broadcast') return `broadcast/${parsed.family}`;
  return parsed.family === 'inbox' ? `inbox/${parsed.param}` : parsed.family;
}

type Totals = Record<string, number> | Map<string, number>;

export class TreMetrics {
  readonly registry = new Registry();
  private readonly quoteSeconds = new Histogram({
    name: 'tre_attestation_quote_seconds',
    help: 'TPM quote latency (one quote answers a batch of attestation requests)',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  private lastQuoteFailed = false;
  private tre: MeteredTre | undefined;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'tre_build_info',
      help: 'the TRE release running (its version as a label), always 1',
      labelNames: ['version'],
      registers: [this.registry],
    }).set({ version: TRE_VERSION }, 1);
  }

  /** Takes a TPM quote, timed; a failed one makes the attestation key not ready until one succeeds. */
  async quote<T>(take: () => Promise<T>): Promise<T> {
    const done = this.quoteSeconds.startTimer();
    try {
      const quote = await take();
      this.lastQuoteFailed = false;
      return quote;
    } catch (err) {
      this.lastQuoteFailed = true;
      throw err;
    } finally {
      done();
    }
  }

  /**
   * Whether the TRE can serve: its store open, its broker listening and, with a TPM, its attestation
   * key (its last quote, if any, succeeded).
   */
  readiness(): Record<string, boolean> {
    const tre = this.tre;
    if (!tre) return { started: false };
    return {
      store: tre.store.db.open,
      broker: tre.broker.server.listening,
      ...(tre.attestation ? { attestationKey: !this.lastQuoteFailed } : {}),
    };
  }

  /** Starts reading the running TRE's parts. */
  watch(tre: MeteredTre): void {
    this.tre = tre;
    const { broker, router, store, monitoring, demandResponse, attestation } = tre;
    this.gauge('tre_connections', 'identified MQTT sessions connected now', () => broker.sessions);
    const connections = this.counter('tre_connections_total', 'MQTT sessions accepted (CONNACK 0)');
    broker.aedes.on('clientReady', () => connections.inc());
    const refused = this.counter(
      'tre_connections_refused_total',
      'connections refused: in the TLS handshake (no valid certificate), or at MQTT connect (revoked, unregistered, too many sessions)',
      ['stage'],
    );
    broker.server.on('tlsClientError', () => refused.inc({ stage: 'tls' }));
    broker.aedes.on('connackSent', (packet) => {
      if (packet.returnCode !== 0) refused.inc({ stage: 'mqtt' });
    });
    const received = this.counter(
      'tre_messages_received_total',
      'messages the TRE accepted from parties, by topic family',
      ['family'],
    );
    const sent = this.counter('tre_messages_sent_total', 'messages the TRE published, by topic family', [
      'family',
    ]);
    broker.aedes.on('publish', (packet, client) => {
      const family = topicFamily(packet.topic);
      if (family) (client ? received : sent).inc({ family });
    });
    this.totals('tre_refusals_total', 'refusal receipts sent, by reason', 'reason', () => router.refusals);
    const commits = new Histogram({
      name: 'tre_store_commit_seconds',
      help: "duration of the store's group commits (one transaction and fsync for the writes queued together)",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [this.registry],
    });
    store.onCommit = (seconds) => commits.observe(seconds);
    this.total('tre_store_writes_total', 'writes committed by the group commits', () => store.stats.writes);
    const dp = monitoring.stats;
    this.total('tre_dp_releases_total', 'noised group totals released to DNOs', () => dp.released);
    this.total(
      'tre_dp_release_failures_total',
      'release runs that failed; their intervals are withheld until the next run retries them',
      () => dp.failedRuns,
    );
    this.total(
      'tre_dp_contributions_total',
      'household contributions in released totals (charged to their budgets), over all groups',
      () => dp.contributions,
    );
    this.totals(
      'tre_dp_contributions_withheld_total',
      'household contributions left out of releases, over all groups: a reading above capacity, or none',
      'reason',
      () => ({ out_of_bounds: dp.excluded, no_reading: dp.missing }),
    );
    this.total(
      'tre_privacy_budget_exhausted_total',
      'household contributions left out of releases because the daily or 30-day budget was spent, over all groups',
      () => dp.outOfBudget,
    );
    this.total(
      'tre_dp_contributions_clamped_total',
      "contributions clamped to the regulator's contribution bound",
      () => dp.clamped,
    );
    const dr = demandResponse.stats;
    this.totals('tre_dr_rounds_total', 'demand-response rounds, by the stage reached', 'stage', () => ({
      announced: dr.events,
      bids_released: dr.released,
    }));
    this.total('tre_dr_bids_total', 'demand-response bids admitted', () => dr.bids);
    const att = attestation?.stats ?? { requests: 0, quotes: 0, failures: 0 };
    this.total('tre_attestation_requests_total', 'attestation requests received', () => att.requests);
    this.total('tre_attestation_quotes_total', 'TPM quotes taken (each answers a batch)', () => att.quotes);
    this.total('tre_attestation_quote_failures_total', 'TPM quotes that failed', () => att.failures);
    if (tre.cluster) this.watchCluster(tre.cluster, monitoring, demandResponse);
  }

  /** A shard's traffic with the other shards: counts only, never a body or a household. */
  private watchCluster(
    { link }: JoinedCluster,
    monitoring: MonitoringService,
    demandResponse: DemandResponseService,
  ): void {
    const l = link.stats;
    this.totals('tre_shard_messages_total', 'sealed messages to and from other shards', 'direction', () => ({
      sent: l.sent,
      received: l.received,
    }));
    this.totals(
      'tre_shard_messages_refused_total',
      'sealed messages from other shards refused (not opened, or not handled), by reason',
      'reason',
      () => l.refused,
    );
    this.totals(
      'tre_shard_attestations_total',
      'attestations of other shards, by verdict',
      'verdict',
      () => l.attestations,
    );
    this.total(
      'tre_dp_late_shards_total',
      "member shards whose partial came after this owner's grace (their households counted missing)",
      () => monitoring.stats.lateShards,
    );
    this.total(
      'tre_dr_late_shards_total',
      "shards whose bid batch came after this gateway's grace (their bids lapsed)",
      () => demandResponse.gateway?.stats.lateShards ?? 0,
    );
  }

  private counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  private gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** A counter read at each scrape from a total a service keeps. */
  private total(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  /** Counters by one label, read at each scrape from totals a service keeps. */
  private totals(name: string, help: string, label: string, read: () => Totals): void {
    new Counter({
      name,
      help,
      labelNames: [label],
      registers: [this.registry],
      collect() {
        this.reset();
        const totals = read();
        for (const [value, n] of totals instanceof Map ? totals : Object.entries(totals))
          this.inc({ [label]: value }, n);
      },
    });
  }
}
