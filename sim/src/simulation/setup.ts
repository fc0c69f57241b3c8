/**
 * Builds the whole simulated system before the clock runs: the TRE (or a cluster of shards,
 * `shards`), the regulator's configuration and household registry, N households running the real
 * agent code, and the DNO's feeder groups, the supplier's tariff and billing period, and the DSM.
 * In a cluster each household lives in one shard and its agent connects there, and the parties
 * connect to different shards (`shard-placement.ts`).
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { memoryTmpdir } from '@tre/hardware';
import { examplePolicy, type Policy } from '@tre/hems-policy';
import type { TreAttestor } from '@tre/meter-agent';
import { type Household, ManualClock, PROTOCOL_VERSION, signContent, topics } from '@tre/protocol';
import type { CertificateAuthority, IssuedFiles } from '@tre/tre-broker';
import { type HouseholdProfile, householdProfile } from '../households/load-profile.js';
import { Dno } from '../parties/dno.js';
import { Dsm } from '../parties/dsm.js';
import { PartyClient } from '../parties/party-client.js';
import { registerHouseholds } from '../parties/regulator.js';
import { Supplier } from '../parties/supplier.js';
import { ShardActivity } from './shard-activity.js';
import { type GridParty, shardOfHousehold, shardOfParty } from './shard-placement.js';
import { startSimulatedCluster } from './simulated-cluster.js';
import { type HouseholdIdentity, SimulatedHousehold } from './simulated-household.js';
import {
  householdAttestor,
  type SimulatedShard,
  type SimulatedTres,
  startSimulatedTre,
} from './simulated-tre.js';

export interface SimulationOptions {
  households: number;
  /** Simulated days to run. */
  days: number;
  /** Upper bound on simulated time per real time. */
  speed: number;
  intervalMinutes?: 15 | 30;
  /** Start of simulated time (default: now, aligned to an interval boundary). */
  startMs?: number;
  /** Working directory (default: a temp dir in memory where possible, removed by stop() unless keep). */
  dir?: string;
  keep?: boolean;
  logLevel?: string;
  progress?: (line: string) => void;
  /** Start swtpm and make agents attest the TRE (default); false for development mode. */
  attestation?: boolean;
  /** Households up to this many read their meter over a virtual serial port (DSMR telegrams); default 50. */
  serialHouseholds?: number;
  /**
   * Something to see in the first simulated hours (the demo): a first DR event at the start
   * (`dr-schedule.ts`) and a first billing period that ends two hours in. Default false: every
   * simulated day alike (the DSM's evening event, billing periods of a day from the start).
   */
  earlyRounds?: boolean;
  /**
   * TRE shards (default 1: one TRE). More: a cluster of attested shards s1..sN over a local 3-node
   * NATS cluster, each on its own swtpm (required), households spread over them.
   */
  shards?: number;
  /** In a cluster: called once NATS runs, before any shard joins (e.g. to record what crosses it). */
  onNats?: (nats: { urls: string[]; admin: IssuedFiles }) => Promise<void> | void;
}

/** Everything the simulation runs, as set up. */
export interface SimulatedSystem {
  opts: SimulationOptions & { intervalMinutes: 15 | 30 };
  dir: string;
  clock: ManualClock;
  /** The regulator's PKI and the TREs: one, or the shards of a cluster. */
  tres: SimulatedTres;
  ca: CertificateAuthority;
  households: SimulatedHousehold[];
  /** The TRE (shard) each household lives in, by household index. */
  homes: SimulatedShard[];
  /** In a cluster: what is still on its way between the shards (the driver waits for none). */
  shardActivity: ShardActivity | undefined;
  /** The regulator first, then the DNO, the supplier and the DSM. */
  parties: PartyClient[];
  /** Members of each DNO group, for the ground truth next to the released totals. */
  groups: Map<string, SimulatedHousehold[]>;
  /** Each household's billing account, by household index. */
  accounts: string[];
  /** Where the agents keep their state. */
  stateRoot: string;
  dno: Dno;
  supplier: Supplier;
  dsm: Dsm;
  attestationMode: string;
}

/** The shipped hems-policy examples, one per kind of household in the load profiles. */
const POLICIES: Record<HouseholdProfile['policy'], Policy> = {
  'flat-ev': examplePolicy('flat-ev'),
  'house-heat-pump': examplePolicy('house-heat-pump'),
  never: examplePolicy('never'),
};

/** Sets everything up and waits until every agent trusts the TRE. */
export async function setUpSimulation(options: SimulationOptions): Promise<SimulatedSystem> {
  const opts = { intervalMinutes: 15 as const, ...options };
  const progress = opts.progress ?? (() => {});
  // In memory where there is a memory file system: the TRE's fsyncs cost a simulation dearly and
  // prove nothing here (`bench ingest` and the kill -9 test measure and check durability).
  const dir = opts.dir ?? (await mkdtemp(join(memoryTmpdir(), 'tre-sim-')));
  // Aligned to the tariff's 30-minute intervals: no reading before the supplier's first price.
  const clock = new ManualClock(opts.startMs ?? Math.floor(Date.now() / 1_800_000) * 1_800_000);
  // A set-up that fails half-way stops what it started (swtpm and nats-server would outlive it).
  const started: { stop(): Promise<void> }[] = [];
  let simulated: SimulatedTres | undefined;
  try {
    simulated =
      (opts.shards ?? 1) > 1
        ? await startSimulatedCluster(dir, clock, { ...opts, shards: opts.shards ?? 1 }, progress)
        : await startSimulatedTre(dir, clock, opts, progress);
    return await setUpAround(opts, dir, clock, simulated, started, progress);
  } catch (err) {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await simulated?.stop().catch(() => {});
    if (!opts.keep && !opts.dir) await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The parties and households around a started TRE; each started one is added to `started`. */
async function setUpAround(
  opts: SimulationOptions & { intervalMinutes: 15 | 30 },
  dir: string,
  clock: ManualClock,
  simulated: SimulatedTres,
  started: { stop(): Promise<void> }[],
  progress: (line: string) => void,
): Promise<SimulatedSystem> {
  const { ca, shards } = simulated;
  const cluster = shards.length > 1;
  const joined = shards.flatMap((s) => (s.tre.cluster ? [s.tre.cluster] : []));
  const shardActivity = cluster ? new ShardActivity(joined) : undefined;
  const urlOf = (party: GridParty) => shards[shardOfParty(party, shards.length)]!.url;
  const homes = Array.from(
    { length: opts.households },
    (_, i) => shards[shardOfHousehold(i, opts.households, shards.length)]!,
  );
  const caPem = await readFile(join(dir, 'pki', 'ca.crt'));
  // Households and grid parties alike attest the TRE before sending anything.
  const { attestor, mode: attestationMode } = await householdAttestor(
    simulated,
    clock,
    caPem.toString('utf8'),
  );

  const { regulatorFiles } = simulated;
  if (cluster)
    progress(`regulator: connecting to shard ${shards[shardOfParty('regulator', shards.length)]!.name}`);
  const regulator = await PartyClient.connect(urlOf('regulator'), regulatorFiles, 'regulator', attestor);
  started.push({ stop: () => regulator.close() });
  const parties = [regulator];
  // The regulator allows daily billing periods in the simulation (the default minimum is a month).
  const config = {
    v: PROTOCOL_VERSION,
    minBillingPeriod: { unit: 'day' as const, count: 1 },
    issuedAt: new Date(clock.now()).toISOString(),
  };
  const regulatorKey = createPrivateKey(await readFile(regulatorFiles.key));
  const jws = await signContent('regulatorConfig', config, regulatorKey);
  await regulator.publish(topics.regulatorConfig('reg'), { v: PROTOCOL_VERSION, requestId: 'config', jws });
  progress(`regulator: issuing ${opts.households} household certificates`);
  const {
    identities,
    households: registry,
    accounts,
  } = await issueHouseholds(ca, opts.households, caPem, cluster ? homes.map((s) => s.name) : undefined);
  progress(
    cluster
      ? 'regulator: registering households (each in its shard)'
      : 'regulator: registering households with the TRE',
  );
  await registerHouseholds(regulator, 'reg', registry, regulatorKey, clock.now());
  if (cluster) {
    // Replicated from the regulator's shard: each shard admits its own meters once it has them.
    await waitFor(
      () => shards.every((s) => s.tre.registry.count() === own(homes, s)) && shardActivity!.idle(),
      60_000,
      'the registry did not reach every shard',
    );
  }

  // Agent state on tmpfs where there is one: the journal's fsyncs stay cheap for thousands of agents.
  const stateRoot = await mkdtemp(join(memoryTmpdir(), 'tre-sim-agents-'));
  started.push({ stop: () => rm(stateRoot, { recursive: true, force: true }) });
  progress(
    cluster
      ? `households: starting ${opts.households} agents (${shards.map((s) => `${s.name}: ${own(homes, s)}`).join(', ')})`
      : `households: starting ${opts.households} agents`,
  );
  const households: SimulatedHousehold[] = [];
  for (let i = 0; i < identities.length; i++) {
    const stateDir = join(stateRoot, identities[i]!.meterId);
    await mkdir(stateDir, { recursive: true });
    const policy = POLICIES[householdProfile(i).policy];
    const h = new SimulatedHousehold(identities[i]!, householdProfile(i), {
      url: homes[i]!.url,
      clock,
      stateDir,
      attestor,
      intervalMinutes: opts.intervalMinutes,
      mode: policy.mode === 'never' ? 'never' : 'auto-bid',
      policy,
      randomId: () => randomBytes(12).toString('base64url'),
    });
    households.push(h);
    started.push(h);
    if (i < (opts.serialHouseholds ?? 50)) await h.attachSerialMeter(`/dev/ttySIM${i}`, clock);
    h.start();
  }
  await waitFor(
    () => households.every((h) => h.link.state === 'trusted'),
    60_000,
    'agents did not all connect',
  );

  const parts = await startGridParties(ca, urlOf, households, opts, clock, attestor, progress);
  parties.push(parts.dno.party, parts.supplier.party, parts.dsm.party);
  return {
    opts,
    dir,
    clock,
    tres: simulated,
    ca,
    households,
    homes,
    shardActivity,
    parties,
    groups: parts.groups,
    accounts,
    stateRoot,
    dno: parts.dno,
    supplier: parts.supplier,
    dsm: parts.dsm,
    attestationMode,
  };
}

/** The regulator issues each household's certificate and registers it with a random account. */
async function issueHouseholds(
  ca: CertificateAuthority,
  count: number,
  caPem: Buffer,
  /** In a cluster: each household's shard, by index. */
  shardOf: string[] | undefined,
): Promise<{ identities: HouseholdIdentity[]; households: Household[]; accounts: string[] }> {
  const identities: HouseholdIdentity[] = [];
  const households: Household[] = [];
  const accounts: string[] = [];
  for (let i = 0; i < count; i++) {
    const meterId = `h${String(i).padStart(5, '0')}`;
    const files = await ca.issue('meter', meterId, { force: true });
    identities.push({
      meterId,
      files: { key: await readFile(files.key), cert: await readFile(files.cert), ca: caPem },
    });
    const account = `acct-${randomBytes(4).toString('hex')}`;
    accounts.push(account);
    households.push({
      meterId,
      supplierId: 'supplier-1',
      dnoId: 'dno-1',
      capacityW: householdProfile(i).capacityW,
      account,
      ...(shardOf && { shard: shardOf[i]! }),
    });
  }
  return { identities, households, accounts };
}

/** The DNO's feeder groups, the supplier's tariff and daily billing period, and the DSM. */
async function startGridParties(
  ca: CertificateAuthority,
  urlOf: (party: GridParty) => string,
  households: SimulatedHousehold[],
  { days, earlyRounds }: Pick<SimulationOptions, 'days' | 'earlyRounds'>,
  clock: ManualClock,
  attestor: TreAttestor,
  progress: (line: string) => void,
): Promise<{ dno: Dno; supplier: Supplier; dsm: Dsm; groups: Map<string, SimulatedHousehold[]> }> {
  progress('DNO: defining feeder groups');
  const dno = new Dno(
    await PartyClient.connect(
      urlOf('dno'),
      await ca.issue('dno', 'dno-1', { force: true }),
      'dno-1',
      attestor,
    ),
    'dno-1',
  );
  await dno.start();
  const feederSize = Math.max(2, Math.min(50, Math.floor(households.length / 4)));
  const groupIds = await dno.defineFeeders(
    households.map((h) => h.id.meterId),
    feederSize,
  );
  const groups = new Map<string, SimulatedHousehold[]>();
  groupIds.forEach((g, i) => {
    groups.set(g, households.slice(i * feederSize, (i + 1) * feederSize));
  });
  progress('supplier: tariff and daily billing period');
  const supplierFiles = await ca.issue('supplier', 'supplier-1', { force: true });
  const supplier = await Supplier.create(
    await PartyClient.connect(urlOf('supplier'), supplierFiles, 'supplier-1', attestor),
    'supplier-1',
    supplierFiles,
  );
  const from = Math.ceil(clock.now() / 1_800_000) * 1_800_000;
  if (earlyRounds)
    // Daily periods whose first boundary is two hours in: the first statements (for those two
    // hours, "estimated") come after the TRE's grace hour. supplier.start's own request then
    // finds the same length and changes nothing.
    await supplier.party.publish(topics.billingPeriod('supplier-1'), {
      v: PROTOCOL_VERSION,
      requestId: 'first-period',
      startsAt: new Date(from + 2 * 3_600_000 - 86_400_000).toISOString(),
      length: { unit: 'day', count: 1 },
    });
  await supplier.start(from, Math.min(200, Math.ceil(days) + 1));
  const dsmFiles = await ca.issue('dsm', 'dsm-1', { force: true });
  const dsm = await Dsm.create(
    await PartyClient.connect(urlOf('dsm'), dsmFiles, 'dsm-1', attestor),
    'dsm-1',
    dsmFiles,
  );
  return { dno, supplier, dsm, groups };
}

/** How many households live in `shard`. */
function own(homes: readonly SimulatedShard[], shard: SimulatedShard): number {
  return homes.filter((h) => h === shard).length;
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(what);
    await new Promise((r) => setTimeout(r, 20));
  }
}
