/**
 * A whole system on one machine: the regulator's PKI, a TRE (in-process, real mTLS MQTT, real
 * SQLite) or a cluster of TRE shards over NATS (`shards`), N households running the real agent
 * code, and the grid parties, all on one simulated clock. Used by `tre-sim run` (headless, with
 * invariant checks) and by the demo. Set up in `setup.ts`; what is checked in `invariants.ts`.
 */
import { rm } from 'node:fs/promises';
import type { ManualClock } from '@tre/protocol';
import type { CertificateAuthority, NatsCluster, RunningTre } from '@tre/tre-broker';
import type { DrRoundRow } from '../dashboard/snapshot.js';
import type { Dno } from '../parties/dno.js';
import type { Dsm } from '../parties/dsm.js';
import type { PartyClient } from '../parties/party-client.js';
import type { Supplier } from '../parties/supplier.js';
import { budgetDistribution, drRounds, recentAlerts } from './dashboard-feed.js';
import { drEventsAt } from './dr-schedule.js';
import {
  billingInvariant,
  dpCheck,
  dpInvariant,
  drInvariant,
  type Invariant,
  leakInvariant,
  type ReadingCounts,
  readingsCheck,
} from './invariants.js';
import { type SimulatedSystem, type SimulationOptions, setUpSimulation } from './setup.js';
import type { SimulatedHousehold } from './simulated-household.js';
import type { SimulatedShard } from './simulated-tre.js';
import { SimulationDriver } from './simulation-driver.js';

export interface SimulationSummary {
  households: number;
  days: number;
  simulatedFrom: string;
  simulatedTo: string;
  wallSeconds: number;
  readings: ReadingCounts;
  invariants: Invariant[];
}

export class Simulation {
  readonly opts: SimulationOptions & { intervalMinutes: 15 | 30 };
  readonly dir: string;
  readonly clock: ManualClock;
  /** The TRE, or in a cluster the first shard (s1). */
  readonly tre: RunningTre;
  /** Every TRE: the one TRE, or the shards s1..sN. */
  readonly shards: SimulatedShard[];
  /** The shards' NATS cluster; undefined for a single TRE. */
  readonly nats: NatsCluster | undefined;
  readonly ca: CertificateAuthority;
  readonly households: SimulatedHousehold[];
  /** The TRE (shard) each household lives in, by household index. */
  readonly homes: SimulatedShard[];
  readonly parties: PartyClient[];
  readonly dno: Dno;
  readonly supplier: Supplier;
  readonly dsm: Dsm;
  /** Members of each DNO group, for the ground truth next to the released totals. */
  readonly groups: Map<string, SimulatedHousehold[]>;
  readonly billingSeries: { t: number; runningTotalMinor: number }[] = [];
  readonly attestationMode: string;
  private driver: SimulationDriver | undefined;

  private constructor(private readonly system: SimulatedSystem) {
    this.opts = system.opts;
    this.dir = system.dir;
    this.clock = system.clock;
    this.shards = system.tres.shards;
    this.tre = this.shards[0]!.tre;
    this.nats = system.tres.nats;
    this.ca = system.ca;
    this.households = system.households;
    this.homes = system.homes;
    this.parties = system.parties;
    this.dno = system.dno;
    this.supplier = system.supplier;
    this.dsm = system.dsm;
    this.groups = system.groups;
    this.attestationMode = system.attestationMode;
  }

  static async create(options: SimulationOptions): Promise<Simulation> {
    return new Simulation(await setUpSimulation(options));
  }

  /** Where the TRE (the first shard) listens. */
  get url(): string {
    return this.shards[0]!.url;
  }

  statementCount(): number {
    return this.supplier.statements.size;
  }

  drRounds(): DrRoundRow[] {
    return drRounds(this.dsm);
  }

  budgetDistribution(): { bucket: string; households: number }[] {
    return budgetDistribution(this.system);
  }

  /** The TREs' latest alerts, newest first. */
  recentAlerts(limit: number): { kind: string; detail: string; at: number }[] {
    return recentAlerts(this.shards, limit);
  }

  /**
   * Released totals against the simulator's own truth: how often |noise| exceeded the stated 95 %
   * bound; `spanning`: releases of groups whose members live in more than one shard.
   */
  dpCheck(): { releases: number; outside: number; spanning: number } {
    return dpCheck(this.system);
  }

  async run(onStep?: (t: number) => void): Promise<SimulationSummary> {
    const wallStart = performance.now();
    const from = this.clock.now();
    const until = from + this.opts.days * 86_400_000;
    this.driver = new SimulationDriver(this.clock, this.opts.intervalMinutes * 60_000, this.opts.speed, {
      atBoundary: async (t) => {
        for (const h of this.households) h.closeInterval(t);
        // The DSM raises an evening event every day at 14:00 UTC when the feeders are loaded
        // (and in the demo a first one at once).
        const step = this.opts.intervalMinutes * 60_000;
        const first = (Math.floor(from / step) + 1) * step;
        for (const event of drEventsAt(t, first, this.households.length, this.opts.earlyRounds === true))
          await this.dsm.raise(event);
      },
      quiet: () =>
        this.shards.every((s) => s.tre.router.inFlight === 0) &&
        (this.system.shardActivity?.idle() ?? true) &&
        this.households.every((h) => h.outbox.depth === 0) &&
        this.parties.every((p) => performance.now() - p.lastActivity > 5),
    });
    // What set-up caused (replicated groups, tariff, billing period) is handled before time moves.
    await this.driver.settle();
    await this.driver.run(until, onStep);
    return this.summary(from, wallStart);
  }

  stopRunning(): void {
    this.driver?.stop();
  }

  private summary(from: number, wallStart: number): SimulationSummary {
    const { readings, invariant } = readingsCheck(this.system);
    return {
      households: this.households.length,
      days: this.opts.days,
      simulatedFrom: new Date(from).toISOString(),
      simulatedTo: new Date(this.clock.now()).toISOString(),
      wallSeconds: (performance.now() - wallStart) / 1000,
      readings,
      invariants: [
        billingInvariant(this.system),
        drInvariant(this.system),
        dpInvariant(this.system),
        invariant,
        leakInvariant(this.system),
      ],
    };
  }

  async stop(): Promise<void> {
    await Promise.all(this.households.map((h) => h.stop()));
    await Promise.all(this.parties.map((p) => p.close()));
    await this.system.tres.stop();
    await rm(this.system.stateRoot, { recursive: true, force: true });
    if (!this.opts.keep && !this.opts.dir) await rm(this.dir, { recursive: true, force: true });
  }
}
