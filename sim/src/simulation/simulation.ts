/**
 * A whole system on one machine: the regulator's PKI, a TRE (in-process, real mTLS MQTT, real
 * SQLite), N households running the real agent code, and the grid parties, all on one simulated
 * clock. Used by `tre-sim run` (headless, with invariant checks) and by the demo.
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Swtpm, startSwtpm, type Tpm } from '@tre/hardware';
import { decide, examplePolicy, type Policy } from '@tre/hems-policy';
import {
  type BidProposal,
  loadAttestationPolicy,
  type TreAttestor,
  tpmQuoteAttestor,
  trustWithoutAttestation,
} from '@tre/meter-agent';
import {
  BASELINE_LOOKBACK_DAYS,
  baselineIntervals,
  type DrAnnouncement,
  type Household,
  ManualClock,
  PROTOCOL_VERSION,
  signContent,
  topics,
} from '@tre/protocol';
import {
  attestationPolicyFor,
  CertificateAuthority,
  createLogger,
  endorseAk,
  type RunningTre,
  startTre,
} from '@tre/tre-broker';
import { type HouseholdProfile, householdProfile } from '../households/load-profile.js';
import { Dno } from '../parties/dno.js';
import { Dsm } from '../parties/dsm.js';
import { PartyClient } from '../parties/party-client.js';
import { registerHouseholds } from '../parties/regulator.js';
import { Supplier, timeOfUsePrice } from '../parties/supplier.js';
import { SimulatedHousehold } from './simulated-household.js';
import { SimulationDriver } from './simulation-driver.js';

export interface SimulationOptions {
  households: number;
  /** Simulated days to run. */
  days: number;
  /** Upper bound on simulated time per real time. */
  speed: number;
  intervalMinutes?: 15 | 30;
  /** Start of simulated time (default: now, aligned to an interval boundary). */
  startMs?: number;
  /** Working directory (default: a temp dir, removed by stop() unless keep). */
  dir?: string;
  keep?: boolean;
  logLevel?: string;
  progress?: (line: string) => void;
  /** Start swtpm and make agents attest the TRE (default); false for development mode. */
  attestation?: boolean;
  /** Households up to this many read their meter over a virtual serial port (DSMR telegrams); default 50. */
  serialHouseholds?: number;
}

/** What the simulated TRE measures as its configuration (and the regulator whitelists). */
const SIMULATION_TRE_CONFIG = { simulation: true };

export interface SimulationSummary {
  households: number;
  days: number;
  simulatedFrom: string;
  simulatedTo: string;
  wallSeconds: number;
  readings: { sent: number; acknowledged: number; storedOnce: number; missing: number; duplicated: number };
  invariants: { name: string; holds: boolean; detail: string }[];
}

export class Simulation {
  readonly households: SimulatedHousehold[] = [];
  readonly parties: PartyClient[] = [];
  dno: Dno | undefined;
  supplier: Supplier | undefined;
  dsm: Dsm | undefined;
  private startMs = 0;
  /** Members of each DNO group, for the ground truth next to the released totals. */
  readonly groups = new Map<string, SimulatedHousehold[]>();
  readonly billingSeries: { t: number; runningTotalMinor: number }[] = [];
  attestationMode = 'agents connect without TPM attestation (development mode)';
  private swtpm: Swtpm | undefined;
  private driver: SimulationDriver | undefined;
  private acknowledged = 0;

  private constructor(
    readonly opts: SimulationOptions & { intervalMinutes: 15 | 30 },
    readonly dir: string,
    readonly clock: ManualClock,
    readonly tre: RunningTre,
    readonly ca: CertificateAuthority,
  ) {}

  static async create(options: SimulationOptions): Promise<Simulation> {
    const opts = { intervalMinutes: 15 as const, ...options };
    const progress = opts.progress ?? (() => {});
    const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'tre-sim-')));
    const step = opts.intervalMinutes * 60_000;
    const start = opts.startMs ?? Math.floor(Date.now() / step) * step;
    const clock = new ManualClock(start);
    progress('regulator: creating the PKI');
    const { ca } = await CertificateAuthority.init(join(dir, 'pki'), { force: true });
    const swtpm =
      opts.attestation === false
        ? undefined
        : await startSwtpm({ dir: join(dir, 'swtpm') }).catch((err: Error) => {
            progress(`no software TPM (${err.message}): agents will connect without attestation`);
            return undefined;
          });
    const tre = await startTre({
      pkiDir: join(dir, 'pki'),
      dataDir: join(dir, 'tre-data'),
      port: 0,
      clock,
      log: createLogger({ level: opts.logLevel ?? 'warn' }),
      limits: { connectionsPerIdentity: 4, messagesPerSecond: 10_000, burst: 100_000 },
      // Feeders of 50 households (or a quarter of a small simulation) are the DNO's groups.
      monitoring: {
        minGroupSize: Math.max(2, Math.min(50, Math.floor(opts.households / 4))),
        epsilon: [1, 1],
        dailyBudget: 100,
      },
      // A software TPM (the same code path as a TPM HAT): the TRE measures itself, the regulator
      // certifies its attestation key, and every agent attests the TRE before sending anything.
      ...(swtpm
        ? {
            tpm: {
              tcti: swtpm.tcti,
              akCertificate: (tpm: Tpm) =>
                // Valid from before the simulated start: the agents check it against simulated time.
                endorseAk(tpm, ca, 'tre', {
                  allowUncertifiedEk: true,
                  validity: { notBefore: new Date(Math.min(start, Date.now()) - 86_400_000), days: 3650 },
                }),
            },
            measuredConfig: SIMULATION_TRE_CONFIG,
          }
        : {}),
    });
    const sim = new Simulation(opts, dir, clock, tre, ca);
    sim.swtpm = swtpm;
    await sim.populate(progress);
    return sim;
  }

  get url(): string {
    return `mqtts://127.0.0.1:${this.tre.port}`;
  }

  private async populate(progress: (line: string) => void): Promise<void> {
    const regulatorFiles = await this.ca.issue('regulator', 'reg', { force: true });
    const regulator = await PartyClient.connect(this.url, regulatorFiles, 'regulator');
    this.parties.push(regulator);
    // The regulator allows daily billing periods in the simulation (the default minimum is a month).
    const config = {
      v: PROTOCOL_VERSION,
      minBillingPeriod: { unit: 'day' as const, count: 1 },
      issuedAt: new Date(this.clock.now()).toISOString(),
    };
    const jws = await signContent(
      'regulatorConfig',
      config,
      createPrivateKey(await readFile(regulatorFiles.key)),
    );
    await regulator.publish(topics.regulatorConfig('reg'), { v: PROTOCOL_VERSION, requestId: 'config', jws });
    progress(`regulator: issuing ${this.opts.households} household certificates`);
    const households: Household[] = [];
    const identities = [];
    const ca = await readFile(join(this.dir, 'pki', 'ca.crt'));
    for (let i = 0; i < this.opts.households; i++) {
      const meterId = `h${String(i).padStart(5, '0')}`;
      const files = await this.ca.issue('meter', meterId, { force: true });
      identities.push({
        meterId,
        files: { key: await readFile(files.key), cert: await readFile(files.cert), ca },
      });
      const account = `acct-${randomBytes(4).toString('hex')}`;
      this.accounts.push(account);
      households.push({
        meterId,
        supplierId: 'supplier-1',
        dnoId: 'dno-1',
        capacityW: householdProfile(i).capacityW,
        account,
      });
    }
    progress('regulator: registering households with the TRE');
    await registerHouseholds(regulator, 'reg', households);
    // Agent state on tmpfs where there is one: the journal's fsyncs stay cheap for thousands of agents.
    const stateRoot = existsSync('/dev/shm')
      ? await mkdtemp('/dev/shm/tre-sim-agents-')
      : join(this.dir, 'agents');
    this.stateRoot = stateRoot;
    progress(`households: starting ${this.opts.households} agents`);
    const attestor = await this.attestor(ca.toString('utf8'));
    for (let i = 0; i < identities.length; i++) {
      const stateDir = join(stateRoot, identities[i]!.meterId);
      await mkdir(stateDir, { recursive: true });
      const h = new SimulatedHousehold(identities[i]!, householdProfile(i), {
        url: this.url,
        clock: this.clock,
        stateDir,
        attestor,
        intervalMinutes: this.opts.intervalMinutes,
        mode: POLICIES[householdProfile(i).policy].mode === 'never' ? 'never' : 'auto-bid',
        propose: (event) => this.propose(i, event),
        randomId: () => randomBytes(12).toString('base64url'),
      });
      // The simulated household carries out what was accepted: its meter sheds the bid's energy.
      h.link.on('message', () => {
        for (const p of h.agent.proposals.values()) {
          if (p.status !== 'accepted' || this.curtailed.has(p.bidId)) continue;
          this.curtailed.add(p.bidId);
          const from = Date.parse(p.loads[0]?.from ?? '');
          const to = Date.parse(p.loads[0]?.to ?? '');
          if (to > from) h.meter.curtail(from, to, Math.ceil((p.quantityWh * 3_600_000) / (to - from)));
        }
      });
      h.link.on('receipt', (r) => {
        if (r.status === 'accepted' && r.family === 'reading') this.acknowledged++;
      });
      this.households.push(h);
      if (i < (this.opts.serialHouseholds ?? 50)) await h.attachSerialMeter(`/dev/ttySIM${i}`, this.clock);
      h.start();
    }
    await waitFor(
      () => this.households.every((h) => h.link.state === 'trusted'),
      60_000,
      'agents did not all connect',
    );
    progress('DNO: defining feeder groups');
    const dno = new Dno(
      await PartyClient.connect(this.url, await this.ca.issue('dno', 'dno-1', { force: true }), 'dno-1'),
      'dno-1',
    );
    this.parties.push(dno.party);
    await dno.start();
    const feederSize = Math.max(2, Math.min(50, Math.floor(this.households.length / 4)));
    const ids = this.households.map((h) => h.id.meterId);
    const groupIds = await dno.defineFeeders(ids, feederSize);
    groupIds.forEach((g, i) => {
      this.groups.set(g, this.households.slice(i * feederSize, (i + 1) * feederSize));
    });
    this.dno = dno;
    progress('supplier: tariff and daily billing period');
    const supplierFiles = await this.ca.issue('supplier', 'supplier-1', { force: true });
    const supplier = await Supplier.create(
      await PartyClient.connect(this.url, supplierFiles, 'supplier-1'),
      'supplier-1',
      supplierFiles,
    );
    this.parties.push(supplier.party);
    this.startMs = Math.ceil(this.clock.now() / 1_800_000) * 1_800_000;
    await supplier.start(this.startMs, Math.min(200, Math.ceil(this.opts.days) + 1));
    this.supplier = supplier;
    const dsmFiles = await this.ca.issue('dsm', 'dsm-1', { force: true });
    const dsm = await Dsm.create(await PartyClient.connect(this.url, dsmFiles, 'dsm-1'), 'dsm-1', dsmFiles);
    this.parties.push(dsm.party);
    this.dsm = dsm;
  }

  private readonly curtailed = new Set<string>();

  /** The DSM raises an evening event every day at 14:00 UTC when the feeders are loaded. */
  private async maybeRaiseEvent(t: number): Promise<void> {
    if (!this.dsm || new Date(t).getUTCHours() !== 14 || new Date(t).getUTCMinutes() !== 0) return;
    const day = t - 14 * 3_600_000;
    await this.dsm.raise({
      eventId: `evening-${new Date(day).toISOString().slice(0, 10)}`,
      windowStart: new Date(day + 18 * 3_600_000).toISOString(),
      windowEnd: new Date(day + 19 * 3_600_000).toISOString(),
      bidDeadline: new Date(day + 17 * 3_600_000).toISOString(),
      requestedReductionWh: 150 * this.households.length,
      priceCapPerMWh: 400_000,
    });
  }

  statementCount(): number {
    return this.supplier?.statements.size ?? 0;
  }

  drRounds(): {
    eventId: string;
    bids: number;
    accepted: number;
    creditMinor: number;
    delivered: number;
    notDelivered: number;
  }[] {
    return [...(this.dsm?.rounds.values() ?? [])].map((r) => ({
      eventId: r.event.eventId,
      bids: r.bids?.bids.length ?? 0,
      accepted: r.accepted.length,
      creditMinor: Math.round(r.creditMicro / 1e6),
      delivered: r.compliance?.results.filter((x) => x.delivered).length ?? 0,
      notDelivered: r.compliance?.results.filter((x) => !x.delivered).length ?? 0,
    }));
  }

  budgetDistribution(): { bucket: string; households: number }[] {
    const spent = this.tre.monitoring.budgetSpent(this.households.map((h) => h.id.meterId));
    const buckets = [
      '0-10 %',
      '10-20 %',
      '20-30 %',
      '30-40 %',
      '40-50 %',
      '50-60 %',
      '60-70 %',
      '70-80 %',
      '80-90 %',
      '90-100 %',
    ];
    const counts = buckets.map(() => 0);
    for (const f of spent) counts[Math.min(9, Math.floor(f * 10))]!++;
    return buckets.map((bucket, i) => ({ bucket, households: counts[i]! }));
  }

  /** Released totals against the simulator's own truth: how often |noise| exceeded the stated 95 % bound. */
  dpCheck(): { releases: number; outside: number } {
    let releases = 0;
    let outside = 0;
    for (const [groupId, list] of this.dno?.releases ?? []) {
      const members = this.groups.get(groupId) ?? [];
      for (const r of list) {
        const start = Date.parse(r.intervalStart);
        let truth = 0;
        for (const h of members)
          for (let t = start; t < start + r.intervalMinutes * 60_000; t += this.opts.intervalMinutes * 60_000)
            truth += h.sent.get(t) ?? 0;
        releases++;
        if (Math.abs(r.noisyTotalWh - truth) >= r.bound95Wh) outside++;
      }
    }
    return { releases, outside };
  }

  private stateRoot = '';
  private readonly accounts: string[] = [];

  async run(onStep?: (t: number) => void): Promise<SimulationSummary> {
    const wallStart = performance.now();
    const from = this.clock.now();
    const until = from + this.opts.days * 86_400_000;
    this.driver = new SimulationDriver(this.clock, this.opts.intervalMinutes * 60_000, this.opts.speed, {
      atBoundary: async (t) => {
        for (const h of this.households) h.closeInterval(t);
        await this.maybeRaiseEvent(t);
      },
      quiet: () =>
        this.tre.router.inFlight === 0 &&
        this.households.every((h) => h.outbox.depth === 0) &&
        this.parties.every((p) => performance.now() - p.lastActivity > 5),
    });
    await this.driver.run(until, onStep);
    return this.summary(from, wallStart);
  }

  /** Each statement equals sum(m x p) recomputed here from what the household sent and the tariff. */
  private billingInvariant(): { name: string; holds: boolean; detail: string } {
    const byAccount = new Map(this.households.map((h, i) => [this.accounts[i]!, h]));
    let checked = 0;
    let wrong = 0;
    let firstWrong = '';
    for (const st of this.supplier?.statements.values() ?? []) {
      const h = byAccount.get(st.account);
      if (!h) continue;
      const from = Date.parse(st.periodStart);
      const to = Date.parse(st.periodEnd);
      let micro = 0n;
      for (const [start, wh] of h.sent)
        if (start >= from && start < to) micro += BigInt(wh) * BigInt(timeOfUsePrice(start));
      // Demand-response credits (negative) and reversals, booked at their window's start.
      for (const o of h.agent.outcomes) {
        const window = Date.parse(this.dsm?.rounds.get(o.eventId)?.event.windowStart ?? '');
        if (o.creditMicroMinor && window >= from && window < to) micro += BigInt(o.creditMicroMinor);
      }
      const q = micro / 1_000_000n;
      const r = micro % 1_000_000n;
      const expected = r * 2n > 1_000_000n || (r * 2n === 1_000_000n && q % 2n === 1n) ? q + 1n : q;
      checked++;
      if (BigInt(st.totalMinor) !== expected) {
        wrong++;
        if (!firstWrong) {
          let n = 0;
          for (const start of h.sent.keys()) if (start >= from && start < to) n++;
          firstWrong = `; e.g. ${st.periodStart}: statement ${st.totalMinor} (${st.intervalsBilled} intervals), recomputed ${expected} (${n} intervals)`;
        }
      }
    }
    return {
      name: 'each statement = sum(m x p) minus DR credits, recomputed by the simulator',
      holds: checked > 0 ? wrong === 0 : this.opts.days * 24 < 25, // the first statement comes a grace hour after day 1
      detail: `${checked} statements checked, ${wrong} differ${firstWrong}`,
    };
  }

  /** DR credits the households were told equal the accepted bids the DSM cleared (q x p). */
  private drInvariant(): { name: string; holds: boolean; detail: string } {
    const dsmSide = [...(this.dsm?.rounds.values() ?? [])]
      .filter((r) => r.accepted.length > 0)
      .reduce((a, r) => a + r.creditMicro, 0);
    const households = this.households
      .flatMap((h) => h.agent.outcomes.filter((o) => o.outcome === 'accepted'))
      .reduce((a, o) => a - (o.creditMicroMinor ?? 0), 0);
    const rounds = this.dsm?.rounds.size ?? 0;
    return {
      name: 'DR credits equal the accepted bids',
      holds: dsmSide === households,
      detail: `${rounds} rounds, accepted q x p = ${dsmSide} micro-units, credited to households = ${households}`,
    };
  }

  /** Asks the household's policy (hems-policy) whether and what to bid, with its own recent consumption. */
  private propose(i: number, event: DrAnnouncement['event']): BidProposal {
    const h = this.households[i]!;
    const from = Date.parse(event.windowStart);
    const to = Date.parse(event.windowEnd);
    // What the agent knows: its own recent intervals; the policy sees those the TRE's baseline uses.
    const step = this.opts.intervalMinutes * 60_000;
    const recent = [];
    for (let t = from - BASELINE_LOOKBACK_DAYS * 86_400_000; t < from; t += step) {
      const wh = h.sent.get(t);
      if (wh !== undefined)
        recent.push({
          intervalStart: new Date(t).toISOString(),
          intervalMinutes: this.opts.intervalMinutes,
          energyWh: wh,
        });
    }
    const recentConsumption = baselineIntervals(recent, from, to);
    const decision = decide(POLICIES[h.profile.policy], event, {
      timeZone: 'UTC',
      now: new Date(this.clock.now()).toISOString(),
      recentConsumption,
    });
    return decision.kind === 'bid' ? { bid: decision.bid } : { reason: decision.reason };
  }

  stopRunning(): void {
    this.driver?.stop();
  }

  private summary(from: number, wallStart: number): SimulationSummary {
    const db = this.tre.store.db;
    const rows = db.prepare('SELECT meter_id, interval_start, effective_wh FROM readings').all() as {
      meter_id: string;
      interval_start: number;
      effective_wh: number;
    }[];
    const stored = new Map<string, number>();
    for (const r of rows) stored.set(`${r.meter_id}@${r.interval_start}`, r.effective_wh);
    let sent = 0;
    let missing = 0;
    let wrong = 0;
    for (const h of this.households) {
      for (const [start, energy] of h.sent) {
        sent++;
        const got = stored.get(`${h.id.meterId}@${start}`);
        if (got === undefined) missing++;
        else if (got !== energy) wrong++;
      }
    }
    const ids = this.households.map((h) => h.id.meterId);
    const leaks = this.parties
      .filter((p) => p !== this.parties[0]) // the regulator registers households by id: that is its job
      .flatMap((p) => p.received)
      .filter((m) => ids.some((id) => m.payload.includes(id) || m.topic.includes(id))).length;
    return {
      households: this.households.length,
      days: this.opts.days,
      simulatedFrom: new Date(from).toISOString(),
      simulatedTo: new Date(this.clock.now()).toISOString(),
      wallSeconds: (performance.now() - wallStart) / 1000,
      readings: {
        sent,
        acknowledged: this.acknowledged,
        storedOnce: rows.length,
        missing,
        duplicated: rows.length - (sent - missing),
      },
      invariants: [
        this.billingInvariant(),
        this.drInvariant(),
        (() => {
          const { releases, outside } = this.dpCheck();
          const allowed = releases * 0.05 + 3 * Math.sqrt(releases * 0.05 * 0.95) + 1;
          return {
            name: 'DP error within its stated 95 % bound (binomial 3-sigma slack)',
            holds: releases > 0 && outside <= allowed,
            detail: `${releases} releases, ${outside} outside the bound (allowed ${Math.floor(allowed)})`,
          };
        })(),
        {
          name: 'every acknowledged reading stored exactly once with the energy sent',
          holds: missing === 0 && wrong === 0 && rows.length === sent,
          detail: `${sent} sent, ${rows.length} stored, ${missing} missing, ${wrong} with other energy`,
        },
        {
          name: 'no provider received a household identifier',
          holds: leaks === 0,
          detail: `${leaks} messages to DNO/supplier/DSM contained a meter id`,
        },
      ],
    };
  }

  /** With the TPM: the regulator's whitelist of this TRE build, and the agents' TPM-quote attestor. */
  private async attestor(caPem: string): Promise<TreAttestor> {
    if (!this.tre.attestation) return trustWithoutAttestation;
    const jws = await this.ca.signAsRegulator(
      'attestationPolicy',
      attestationPolicyFor(SIMULATION_TRE_CONFIG, {
        policyId: 'simulation',
        issuedAt: new Date(this.clock.now()),
      }),
    );
    this.attestationMode = `agents verify a TPM quote (swtpm) against the regulator's whitelist before sending; PCR 23 ${this.tre.attestation.pcr.slice(0, 16)}…`;
    return tpmQuoteAttestor({
      regulatorRootPem: caPem,
      policy: await loadAttestationPolicy(jws, caPem),
      clock: this.clock,
      timeoutMs: 365 * 86_400_000,
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.households.map((h) => h.stop()));
    await Promise.all(this.parties.map((p) => p.close()));
    await this.tre.stop();
    await this.swtpm?.stop();
    if (this.stateRoot.startsWith('/dev/shm/')) await rm(this.stateRoot, { recursive: true, force: true });
    if (!this.opts.keep && !this.opts.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The shipped hems-policy examples, one per kind of household in the load profiles. */
const POLICIES: Record<HouseholdProfile['policy'], Policy> = {
  'flat-ev': examplePolicy('flat-ev'),
  'house-heat-pump': examplePolicy('house-heat-pump'),
  never: examplePolicy('never'),
};
