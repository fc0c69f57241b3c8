/**
 * Test support for the provider-view differential tests (privacy-differential*.test.ts): the
 * random scenario, its run through the TRE's real flows (one TRE, or three shards joined in
 * memory), the classification of every field a provider may receive, and the comparison of two
 * neighbouring runs. See privacy-differential.test.ts for what is checked and why.
 */
import { ManualClock, signContent, type Tariff, topics } from '@tre/protocol';
import type { Flows } from '@tre/tre-broker';
import fc from 'fast-check';
import { decodeJwt } from 'jose';
import { flowContext } from './flow-context.js';
import { memoryCluster } from './memory-cluster.js';
import { seededRandom } from './seeded-random.js';

/**
 * same: identical in neighbouring runs. noised: may differ by at most the release's sensitivity,
 * and only in a release T is part of. random: fresh randomness independent of any input (ids,
 * pseudonyms). granted: the exact value the paper grants, which may differ only where it is T's
 * (T's statement; T's bid or pass/fail as one element of a shuffled list).
 */
export type FieldClass = 'same' | 'noised' | 'random' | 'granted';

const RECEIPT = {
  v: 'same',
  family: 'same',
  status: 'same',
  requestId: 'same',
  reason: 'same',
  // Fixed texts; in a cluster an acceptance sent to another shard than the round's gateway is told
  // the gateway's name: the shard the DSM itself was connected to when it raised or modified the event.
  message: 'same',
  duplicate: 'same',
} as const;
const EVENT_TERMS = [
  'v',
  'eventId',
  'dsmId',
  'windowStart',
  'windowEnd',
  'bidDeadline',
  'acceptBy',
  'requestedReductionWh',
  'priceCapPerMWh',
];
export const CLASSES: Record<string, Record<string, FieldClass>> = {
  'dno/aggregate': {
    v: 'same',
    groupId: 'same',
    intervalStart: 'same',
    intervalMinutes: 'same',
    noisyTotalWh: 'noised',
    epsilon: 'same',
    noiseScaleWh: 'same',
    bound95Wh: 'same',
  },
  'dno/inbox/receipt': RECEIPT,
  'supplier/inbox/receipt': RECEIPT,
  'dsm/inbox/receipt': RECEIPT,
  'supplier/statement': {
    v: 'same',
    'jws.v': 'same',
    'jws.statementId': 'random',
    'jws.supplierId': 'same',
    // In a cluster the supplier also learns which shard signed and sent it (account -> shard):
    // the regulator's assignment, not the household's input, so the same in neighbouring runs.
    'jws.account': 'same',
    'jws.periodStart': 'same',
    'jws.periodEnd': 'same',
    'jws.currency': 'same',
    // T's own total: its readings, its DR credit, reversal (an override) and compensation (a change).
    'jws.totalMinor': 'granted',
    'jws.basis': 'granted',
  },
  'dsm/bids': {
    v: 'same',
    eventId: 'same',
    'bids[]': 'granted',
    'bids[].pseudonym': 'random',
    'bids[].quantityWh': 'granted',
    'bids[].pricePerMWh': 'granted',
  },
  'dsm/compliance': {
    v: 'same',
    eventId: 'same',
    // T's override reaches the DSM only as T's element `delivered: false`, like a failed shed.
    'results[]': 'granted',
    'results[].pseudonym': 'random',
    'results[].delivered': 'granted',
  },
  'broadcast/tariff': {
    v: 'same',
    ...Object.fromEntries(
      [
        'v',
        'supplierId',
        'tariffId',
        'currency',
        'validFrom',
        'validTo',
        'intervalMinutes',
        'pricesPerMWh[]',
      ].map((k) => [`jws.${k}`, 'same' as const]),
    ),
  },
  'broadcast/dr-event': {
    '': 'same', // the empty payload that clears the retained announcement
    v: 'same',
    'jws.v': 'same',
    'jws.expiresAt': 'same',
    // A modification's revision number and a cancellation's flag: what the DSM did, nothing of households.
    'jws.revision': 'same',
    'jws.cancelled': 'same',
    ...Object.fromEntries(EVENT_TERMS.map((k) => [`jws.event.${k}`, 'same' as const])),
  },
};
/** Lists whose order is a uniform shuffle: compared as multisets of their non-random fields. */
const SHUFFLED = new Set(['bids', 'results']);

const HOUR = 3_600_000;
const MIN = 60_000;
const HALF = 30 * MIN;
export const T0 = Date.UTC(2026, 2, 2); // a Monday
export const METERS = Array.from({ length: 12 }, (_, i) => `h${i}`);
export const TARGET = 'h0';
export const BLOCKS = [0, 1, 2, 3].map((b) => METERS.slice(3 * b, 3 * b + 3));
/** The shards of the cluster variant; households round-robin (h0 in s1, h1 in s2, ...), so every block spans all three. */
export const SHARDS = ['s1', 's2', 's3'] as const;

/** When, in its revision's life, the DSM changes the event. */
export type Stage = 'open' | 'released' | 'accepted' | 'settled';

export interface Scenario {
  groups: number[][]; // each a set of block indices
  energy: number[][]; // [meter][interval] Wh per 30 minutes
  prices: [number, number, number]; // night, day, peak (minor per MWh)
  secondPeriodDays: 1 | 2; // a calendar change sent mid-day
  bids: { meter: number; quantityWh: number; pricePerMWh: number }[];
  acceptAtMost: number; // the DSM accepts bids priced at most this
  contributionBoundWh: number | null; // the regulator's bound (null: the default, above capacity here)
  seed: number;
  dr: {
    /** The DSM modifies the event (revision 1) in this stage of revision 0, possibly with a new price cap. */
    modify: { stage: Stage; priceCapPerMWh: number | null } | null;
    /** The DSM cancels the event's last revision in this stage. */
    cancel: Stage | null;
    /** Households other than T that override an accepted shed of each revision. */
    overriders: number[];
    /** Whether T overrides (as drawn; the neighbouring 'override-flipped' run does the opposite). */
    targetOverrides: boolean;
    /** Overrides soon after the acceptance, or in the window. */
    overrideWhen: 'early' | 'late';
  };
  /** In the cluster variant: the shard each provider is connected to (indices into SHARDS). */
  at: {
    dno: number;
    supplier: number;
    dsmEvent: number;
    dsmModify: number;
    dsmAccept: number;
    dsmCancel: number;
  };
  /** In the cluster variant: a shard cut off around one interval's release (a late member shard), or none. */
  lateShard: { shard: number; interval: number } | null;
}

export type Variant = 'as-drawn' | 'reading-changed' | 'target-absent' | 'bid-absent' | 'override-flipped';
export const NEIGHBOURS = ['reading-changed', 'target-absent', 'bid-absent', 'override-flipped'] as const;

export interface Received {
  /** The shard whose connections got it (the provider may be connected to any); '' for one TRE. */
  where: string;
  topic: string;
  at: number;
  payload: string;
}

const stage = fc.constantFrom<Stage>('open', 'released', 'accepted', 'settled');
const shardIndex = fc.integer({ min: 0, max: 2 });

export const scenarios: fc.Arbitrary<Scenario> = fc.record({
  groups: fc
    .uniqueArray(fc.uniqueArray(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 4 }), {
      minLength: 1,
      maxLength: 4,
      selector: (g) => [...g].sort().join(),
    })
    .filter((gs) => gs.some((g) => g.includes(0))),
  energy: fc.array(fc.array(fc.integer({ min: 0, max: 1_500 }), { minLength: 48, maxLength: 48 }), {
    minLength: 12,
    maxLength: 12,
  }),
  prices: fc.tuple(
    fc.integer({ min: 10_000, max: 20_000 }),
    fc.integer({ min: 15_000, max: 30_000 }),
    fc.integer({ min: 25_000, max: 40_000 }),
  ),
  secondPeriodDays: fc.constantFrom(1 as const, 2 as const),
  bids: fc
    .uniqueArray(
      fc.record({
        meter: fc.integer({ min: 0, max: 11 }),
        quantityWh: fc.integer({ min: 1, max: 3_000 }),
        pricePerMWh: fc.integer({ min: 0, max: 200_000 }),
      }),
      { selector: (b) => b.meter, minLength: 1, maxLength: 6 },
    )
    .map((bs) =>
      bs.some((b) => b.meter === 0) ? bs : [...bs, { meter: 0, quantityWh: 500, pricePerMWh: 1_000 }],
    ),
  acceptAtMost: fc.integer({ min: 0, max: 200_000 }),
  // Below the readings' range (0-1,500 Wh) as often as not, so T's changed reading is clamped.
  contributionBoundWh: fc.option(fc.integer({ min: 200, max: 2_000 })),
  seed: fc.nat(),
  dr: fc.record({
    modify: fc.option(
      fc.record({ stage, priceCapPerMWh: fc.option(fc.integer({ min: 50_000, max: 200_000 })) }),
      { freq: 2 },
    ),
    cancel: fc.option(stage, { freq: 2 }),
    overriders: fc.uniqueArray(fc.integer({ min: 1, max: 11 }), { maxLength: 3 }),
    targetOverrides: fc.boolean(),
    overrideWhen: fc.constantFrom('early' as const, 'late' as const),
  }),
  at: fc.record({
    dno: shardIndex,
    supplier: shardIndex,
    dsmEvent: shardIndex,
    dsmModify: shardIndex,
    dsmAccept: shardIndex,
    dsmCancel: shardIndex,
  }),
  lateShard: fc.option(fc.record({ shard: shardIndex, interval: fc.integer({ min: 2, max: 40 }) }), {
    freq: 2,
  }),
});

/** The terms of each revision of the DR event, and when the DSM changes it. */
interface Revision {
  bidDeadline: number;
  acceptBy: number;
  windowStart: number;
  windowEnd: number;
  priceCapPerMWh: number;
  /** When this revision is created (raised, or modified into). */
  from: number;
  /** When this revision is changed (modified or cancelled), if it is, and in which stage. */
  changedIn?: Stage;
  changedAt?: number;
}

const COMPLIANCE_GRACE = HOUR; // the DR service's default

/** When a change in `stage` of a revision with these terms is sent. */
function changeTime(r: Omit<Revision, 'from'>, stage: Stage): number {
  switch (stage) {
    case 'open':
      return r.bidDeadline - 10 * MIN;
    case 'released':
      return r.bidDeadline + 2 * MIN; // released at the deadline, not yet accepted
    case 'accepted':
      return r.bidDeadline + 45 * MIN; // accepted just after the release
    case 'settled':
      return r.windowEnd + COMPLIANCE_GRACE + 30 * MIN;
  }
}

/** The event's revisions as the DSM drives it in this scenario. */
export function revisionsOf(s: Scenario): Revision[] {
  const first: Revision = {
    from: T0 - 3 * HOUR,
    bidDeadline: T0 - 2 * HOUR,
    acceptBy: T0 - HOUR,
    windowStart: T0 + 18 * HOUR,
    windowEnd: T0 + 19 * HOUR,
    priceCapPerMWh: 150_000,
  };
  const revisions = [first];
  if (s.dr.modify) {
    const at = s.dr.modify.stage === 'open' ? T0 - 150 * MIN : changeTime(first, s.dr.modify.stage);
    Object.assign(first, { changedIn: s.dr.modify.stage, changedAt: at });
    const late = s.dr.modify.stage === 'accepted' || s.dr.modify.stage === 'settled';
    const settledLate = s.dr.modify.stage === 'settled';
    revisions.push({
      from: at,
      bidDeadline: late ? at + 30 * MIN : T0 - 90 * MIN,
      acceptBy: late ? at + 60 * MIN : T0 - HOUR,
      windowStart: settledLate ? T0 + 22 * HOUR : first.windowStart,
      windowEnd: settledLate ? T0 + 23 * HOUR : first.windowEnd,
      priceCapPerMWh: s.dr.modify.priceCapPerMWh ?? first.priceCapPerMWh,
    });
  }
  const last = revisions.at(-1)!;
  if (s.dr.cancel) Object.assign(last, { changedIn: s.dr.cancel, changedAt: changeTime(last, s.dr.cancel) });
  return revisions;
}

type Party = ReturnType<ReturnType<typeof flowContext>['party']>;

/** One TRE, or three shards joined in memory: where each party connects, and what providers got. */
interface Deployment {
  clock: ManualClock;
  /** A provider connected to shard `at` (ignored by one TRE). */
  provider(who: { role: 'regulator' | 'dno' | 'supplier' | 'dsm'; id: string }, at: number): Party;
  /** A household, connected to its own shard. */
  meter(i: number): Party;
  settle(): Promise<void>;
  deliverPending(): Promise<void>;
  /** Every provider message published so far, at every shard. */
  received(): Received[];
  /** The registry, as the regulator sends it. */
  register(regulator: Party, households: object[]): Promise<void>;
  /** Makes a shard late (or no longer: what it held back is sent); no-op for one TRE. */
  cut(shard: number, late: boolean): Promise<void>;
  /** The kinds of shard messages a late shard held back. */
  heldKinds: ReadonlySet<string>;
  stop(): Promise<void>;
}

/** What a late shard holds back: its partials (DP), its bid batches and its compliance results (DR). */
const LATE_KINDS = new Set(['monitoring.partial', 'dr.batch', 'dr.compliance']);
const PROVIDERS = new Set(['dno', 'supplier', 'dsm', 'broadcast']);
const settleTicks = async () => {
  for (let i = 0; i < 30; i++) await new Promise((r) => setImmediate(r));
};
const monitoringOptions = (seed: number) => ({
  minGroupSize: 3,
  releaseMinutes: 30 as const,
  random: seededRandom(seed),
  shardGraceMs: 2 * MIN,
});

function single(s: Scenario): Deployment {
  const f = flowContext(T0 - 3 * HOUR);
  const flows = f.flows({ monitoring: monitoringOptions(s.seed) });
  const meters = METERS.map((m) => f.party({ role: 'meter', id: m }));
  const parties = new Map<string, Party>();
  return {
    clock: f.clock,
    provider: (who) => {
      const key = `${who.role}/${who.id}`;
      if (!parties.has(key)) parties.set(key, f.party(who));
      return parties.get(key)!;
    },
    meter: (i) => meters[i]!,
    settle: settleTicks,
    deliverPending: async () => {
      await flows.billing.deliverPending();
    },
    received: () =>
      f.published
        .filter((p) => PROVIDERS.has(p.topic.split('/')[2]!))
        .map((p) => ({ where: '', topic: p.topic, at: p.at, payload: p.payload })),
    register: async (_, households) => {
      await f.ctx.registry.upsert(households as never);
    },
    cut: async () => {},
    heldKinds: new Set(),
    stop: async () => {
      await flows.stop();
      f.close();
    },
  };
}

function cluster(s: Scenario): Deployment {
  const clock = new ManualClock(T0 - 3 * HOUR);
  const mc = memoryCluster(SHARDS);
  /** A late shard: what it sends other shards for a release, a round or a report is held back until it catches up. */
  const late = new Set<string>();
  const held: (() => Promise<void>)[] = [];
  const heldKinds = new Set<string>();
  const link =
    (name: string): NonNullable<Parameters<typeof flowContext>[1]>['cluster'] =>
    (registry) => {
      const own = mc.shard(name)(registry);
      return {
        ...own,
        send: async (to, kind, body) => {
          if (late.has(name) && to !== name && LATE_KINDS.has(kind)) {
            heldKinds.add(kind);
            held.push(() => own.send(to, kind, body));
          } else await own.send(to, kind, body);
        },
      };
    };
  const shards: { f: ReturnType<typeof flowContext>; flows: Flows }[] = SHARDS.map((name, i) => {
    const f = flowContext(clock.now(), { cluster: link(name), shard: name, clock });
    f.ctx.registry.serve(f.ctx.router); // as tre.ts does
    // Each shard its own seeded noise (only a group's owner shard draws).
    return { f, flows: f.flows({ monitoring: monitoringOptions(s.seed + i) }) };
  });
  const meters = METERS.map((m, i) => shards[i % SHARDS.length]!.f.party({ role: 'meter', id: m }));
  const parties = new Map<string, Party>();
  const settle = async () => {
    // Until nothing is in flight between shards and no shard published anything more.
    let last = -1;
    for (let round = 0; round < 20; round++) {
      await mc.settled();
      await settleTicks();
      const n = mc.crossed.length + shards.reduce((sum, x) => sum + x.f.published.length, 0);
      if (n === last) break;
      last = n;
    }
    if (mc.errors.length > 0) throw mc.errors[0];
  };
  return {
    clock,
    provider: (who, at) => {
      const key = `${who.role}/${who.id}@${at}`;
      if (!parties.has(key)) parties.set(key, shards[at]!.f.party(who));
      return parties.get(key)!;
    },
    meter: (i) => meters[i]!,
    settle,
    deliverPending: async () => {
      for (const x of shards) {
        await x.flows.billing.deliverPending();
        await settle();
      }
    },
    received: () =>
      shards.flatMap((x, i) =>
        x.f.published
          .filter((p) => PROVIDERS.has(p.topic.split('/')[2]!))
          .map((p) => ({ where: SHARDS[i]!, topic: p.topic, at: p.at, payload: p.payload })),
      ),
    register: async (regulator, households) => {
      const jws = await signContent(
        'registryUpdate',
        {
          v: 1,
          households: households.map((h, i) => ({ ...h, shard: SHARDS[i % SHARDS.length] })),
          issuedAt: new Date(T0 - 4 * HOUR).toISOString(),
        },
        regulator.privateKey,
      );
      const r = await regulator.send(topics.registry('reg'), { v: 1, requestId: 'registry', jws });
      if (r.status !== 'accepted') throw new Error(`registry refused: ${r.message}`);
      await settle();
    },
    cut: async (shard, down) => {
      if (down) late.add(SHARDS[shard]!);
      else {
        late.delete(SHARDS[shard]!);
        for (const send of held.splice(0)) await send();
        await settle();
      }
    },
    heldKinds,
    stop: async () => {
      await settle();
      for (const x of shards) {
        reached.lateMemberShards += x.flows.monitoring.stats.lateShards;
        reached.lateBidShards += x.flows.demandResponse.gateway?.stats.lateShards ?? 0;
      }
      for (const x of shards) await x.flows.stop();
      for (const x of shards) x.f.close();
    },
  };
}

/** Statistics of what the runs did (to show the draws reach the paths they are meant to). */
export const reached = {
  overrideRecorded: 0,
  targetOverrideRecorded: 0,
  modified: 0,
  cancelled: 0,
  acceptanceRedirected: 0,
  lateShard: 0,
  lateMemberShards: 0,
  lateBidShards: 0,
};

/** Runs the scenario through the TRE's flows and returns what the providers received. */
export interface View {
  received: Received[];
  /** In a cluster: the kinds of shard messages a late shard held back (e.g. `dr.compliance`). */
  heldKinds: ReadonlySet<string>;
}

export async function providerView(s: Scenario, variant: Variant, mode: 'single' | 'cluster'): Promise<View> {
  const d = mode === 'single' ? single(s) : cluster(s);
  const debug = (...args: unknown[]) => {
    if (process.env.DIFF_DEBUG) console.log(...args);
  };
  const { clock } = d;
  const advanceTo = async (t: number) => {
    if (t > clock.now()) clock.advance(t - clock.now());
    await d.settle();
  };
  try {
    const regulator = d.provider({ role: 'regulator', id: 'reg' }, 0);
    await d.register(
      regulator,
      METERS.map((m) => ({
        meterId: m,
        supplierId: 's',
        dnoId: 'd',
        capacityW: 6_000,
        account: `acct-${m}`,
      })),
    );
    const dno = d.provider({ role: 'dno', id: 'd' }, s.at.dno);
    const supplier = d.provider({ role: 'supplier', id: 's' }, s.at.supplier);
    const dsmAt = (i: number) => d.provider({ role: 'dsm', id: 'x' }, i);
    const config = {
      v: 1,
      minBillingPeriod: { unit: 'day', count: 1 },
      ...(s.contributionBoundWh !== null && { contributionBoundWh: s.contributionBoundWh }),
      issuedAt: new Date(T0 - 4 * HOUR).toISOString(),
    };
    await regulator.send(topics.regulatorConfig('reg'), {
      v: 1,
      requestId: 'config',
      jws: await signContent('regulatorConfig', config, regulator.privateKey),
    });
    await d.settle(); // replicated to every shard before the calendar is checked against it
    await dno.send(topics.groups('d'), {
      v: 1,
      requestId: 'groups',
      groups: s.groups.map((blocks, i) => ({ groupId: `g${i}`, meters: blocks.flatMap((b) => BLOCKS[b]!) })),
    });
    await supplier.send(topics.billingPeriod('s'), {
      v: 1,
      requestId: 'period',
      startsAt: new Date(T0).toISOString(),
      length: { unit: 'day', count: 1 },
    });
    const [night, day, peak] = s.prices;
    const tariff: Tariff = {
      v: 1,
      supplierId: 's',
      tariffId: 't1',
      currency: 'GBP',
      validFrom: new Date(T0).toISOString(),
      validTo: new Date(T0 + 3 * 24 * HOUR).toISOString(),
      intervalMinutes: 30,
      pricesPerMWh: Array.from({ length: 144 }, (_, i) => {
        const h = (i % 48) / 2;
        return h < 7 ? night : h >= 16 && h < 19 ? peak : day;
      }),
    };
    await supplier.send(topics.tariff('s'), {
      v: 1,
      requestId: 'tariff',
      jws: await signContent('tariff', tariff, supplier.privateKey),
    });
    await d.settle();

    // The DR event's steps, each at its time; interleaved below with the day's readings.
    const revisions = revisionsOf(s);
    const iso = (t: number) => new Date(t).toISOString();
    const termsOf = (r: Revision) => ({
      windowStart: iso(r.windowStart),
      windowEnd: iso(r.windowEnd),
      bidDeadline: iso(r.bidDeadline),
      acceptBy: iso(r.acceptBy),
      requestedReductionWh: 5_000,
      priceCapPerMWh: r.priceCapPerMWh,
    });
    const targetOverrides = variant === 'override-flipped' ? !s.dr.targetOverrides : s.dr.targetOverrides;
    const steps: { t: number; run: () => Promise<void> }[] = [];
    let gateway = s.at.dsmEvent;
    revisions.forEach((r, rev) => {
      const bids = async () => {
        for (const b of s.bids) {
          if ((variant === 'bid-absent' || variant === 'target-absent') && b.meter === 0) continue;
          const res = await d.meter(b.meter).send(topics.bid(METERS[b.meter]!), {
            v: 1,
            requestId: `bid-${b.meter}-r${rev}`,
            bidId: `bid-${b.meter}-r${rev}-xxxx`,
            eventId: 'e1',
            quantityWh: b.quantityWh,
            pricePerMWh: b.pricePerMWh,
          });
          debug('bid', rev, res.status, res.reason ?? '');
        }
      };
      if (rev === 0)
        steps.push({
          t: r.from,
          run: async () => {
            const dsm = dsmAt(s.at.dsmEvent);
            const event = { v: 1, eventId: 'e1', dsmId: 'x', ...termsOf(r) };
            await dsm.send(topics.drEvent('x'), {
              v: 1,
              requestId: 'event',
              jws: await signContent('drEvent', event, dsm.privateKey),
            });
            await d.settle();
            await bids();
          },
        });
      else
        steps.push({
          t: r.from,
          run: async () => {
            const dsm = dsmAt(s.at.dsmModify);
            const res = await dsm.send(topics.drModify('x', 'e1'), {
              v: 1,
              requestId: `modify-${rev}`,
              jws: await signContent(
                'drModify',
                { v: 1, eventId: 'e1', dsmId: 'x', issuedAt: iso(clock.now()), terms: termsOf(r) },
                dsm.privateKey,
              ),
            });
            debug('modify', res);
            if (res.status === 'accepted') reached.modified++;
            gateway = s.at.dsmModify;
            await d.settle();
            await bids();
          },
        });
      const releasedBeforeChange = r.changedIn !== 'open' && r.changedIn !== 'released';
      if (releasedBeforeChange)
        steps.push({
          t: r.bidDeadline + 1, // the release of the pseudo-bids, then the DSM's acceptance
          run: async () => {
            const released = d
              .received()
              // This round's (released at its gateway at its deadline; a shard's list is in time order).
              .filter((p) => p.topic === topics.pseudoBids('x', 'e1') && p.at >= r.bidDeadline)
              .at(-1);
            const offered = released
              ? (JSON.parse(released.payload) as { bids: { pseudonym: string; pricePerMWh: number }[] }).bids
              : [];
            const acceptance = {
              v: 1,
              eventId: 'e1',
              dsmId: 'x',
              accepted: offered.filter((b) => b.pricePerMWh <= s.acceptAtMost).map((b) => b.pseudonym),
            };
            // Connected elsewhere than the gateway: told where to send it, then sent there.
            const tries =
              mode === 'cluster' && s.at.dsmAccept !== gateway ? [s.at.dsmAccept, gateway] : [gateway];
            for (const at of tries) {
              const dsm = dsmAt(at);
              const res = await dsm.send(topics.accept('x', 'e1'), {
                v: 1,
                requestId: `accept-${rev}-${at}`,
                jws: await signContent('drAcceptance', acceptance, dsm.privateKey),
              });
              debug('accept', at, res);
              if (at !== gateway && res.reason === 'EVENT_INVALID') reached.acceptanceRedirected++;
              await d.settle();
            }
          },
        });
      const overrideAt = s.dr.overrideWhen === 'early' ? r.bidDeadline + 30 * MIN : r.windowStart + 15 * MIN;
      steps.push({
        t: overrideAt,
        run: async () => {
          const who = [...s.dr.overriders, ...(targetOverrides && variant !== 'target-absent' ? [0] : [])];
          for (const i of who) {
            const res = await d.meter(i).send(topics.drOverride(METERS[i]!), {
              v: 1,
              requestId: `override-${i}-r${rev}`,
              eventId: 'e1',
              bidId: `bid-${i}-r${rev}-xxxx`,
            });
            if (res.status === 'accepted') {
              reached.overrideRecorded++;
              if (i === 0) reached.targetOverrideRecorded++;
            }
          }
        },
      });
      if (r.changedIn && rev === revisions.length - 1 && s.dr.cancel)
        steps.push({
          t: r.changedAt!,
          run: async () => {
            const dsm = dsmAt(s.at.dsmCancel);
            const res = await dsm.send(topics.drCancel('x', 'e1'), {
              v: 1,
              requestId: 'cancel',
              jws: await signContent(
                'drCancel',
                { v: 1, eventId: 'e1', dsmId: 'x', issuedAt: iso(clock.now()) },
                dsm.privateKey,
              ),
            });
            debug('cancel', res);
            if (res.status === 'accepted') reached.cancelled++;
            await d.settle();
          },
        });
    });

    // The day's readings, each sent a minute after its interval ends; a calendar change at noon.
    const registers = METERS.map(() => 50_000);
    for (let k = 0; k < 48; k++)
      steps.push({
        t: T0 + (k + 1) * HALF + MIN,
        run: async () => {
          if (k === 24)
            await supplier.send(topics.billingPeriod('s'), {
              v: 1,
              requestId: 'period-2',
              startsAt: new Date(T0 + HOUR).toISOString(),
              length: { unit: 'day', count: s.secondPeriodDays },
            });
          for (const [i, m] of METERS.entries()) {
            if (m === TARGET && variant === 'target-absent') continue;
            let wh = s.energy[i]![k]!;
            if (m === TARGET && variant === 'reading-changed' && k === 37) wh = (wh + 700) % 1_500; // one interval differs
            registers[i]! += wh;
            await d.meter(i).send(topics.reading(m), {
              v: 1,
              requestId: `${m}-${k}`,
              intervalStart: new Date(T0 + k * HALF).toISOString(),
              intervalMinutes: 30,
              energyWh: wh,
              registerWh: registers[i]!,
            });
          }
          // A shard late from this interval's readings for an hour (past the releases of two intervals).
          const late = mode === 'cluster' ? s.lateShard : null;
          if (late?.interval === k) await d.cut(late.shard, true);
          if (late?.interval === k - 2) {
            await d.cut(late.shard, false);
            reached.lateShard++;
          }
        },
      });
    // Stable: steps at one time run in the order pushed (a revision's steps before the readings).
    steps.sort((a, b) => a.t - b.t);
    for (const step of steps) {
      await advanceTo(step.t);
      await step.run();
    }
    await advanceTo(T0 + 26 * HOUR); // statements (grace 1 h), compliance
    await d.deliverPending();
    await d.settle();
    return { received: d.received(), heldKinds: d.heldKinds };
  } finally {
    await d.stop();
  }
}

/** The message's kind: its topic without the party id (e.g. `dno/aggregate`, `supplier/inbox/receipt`). */
export function kindOf(topic: string): string {
  const levels = topic.split('/').slice(2);
  if (levels[0] === 'broadcast') return `broadcast/${levels[1]}`;
  const [role, , family, param] = levels;
  return family === 'inbox' ? `${role}/inbox/${param}` : `${role}/${family}`;
}

/** Flattens a payload to path -> value; JWS payloads are decoded (the signature is fresh randomness). */
function flatten(value: unknown, path: string, out: Map<string, unknown>): void {
  if (path.endsWith('jws') && typeof value === 'string' && value.includes('.')) {
    flatten(decodeJwt(value), path, out);
    return;
  }
  const last = path.split('.').at(-1) ?? '';
  if (Array.isArray(value)) {
    if (SHUFFLED.has(last)) {
      // A multiset: the elements without their random fields, sorted.
      const elements = value.map((e) => {
        const fields = new Map<string, unknown>();
        flatten(e, `${path}[]`, fields);
        for (const k of fields.keys()) out.set(k, 'element field'); // classified below, per path
        return JSON.stringify(
          [...fields].filter(([k]) => !k.endsWith('pseudonym')).sort(([a], [b]) => a.localeCompare(b)),
        );
      });
      out.set(`${path}[]`, elements.sort());
    } else out.set(`${path}[]`, JSON.stringify(value));
    return;
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) flatten(v, path ? `${path}.${k}` : k, out);
    return;
  }
  out.set(path, value);
}

function fieldsOf(payload: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (payload === '') out.set('', '');
  else flatten(JSON.parse(payload), '', out);
  return out;
}

/** The fields of a message classified `same`, as one text (an order among messages that cannot depend on T). */
function sameFieldsOf(r: Received): string {
  const classes = CLASSES[kindOf(r.topic)] ?? {};
  const fields = fieldsOf(r.payload);
  return JSON.stringify(
    [...fields].filter(([k]) => classes[k] === 'same').sort(([a], [b]) => a.localeCompare(b)),
  );
}

/** Every field path compared so far, by kind. */
export const classified = new Set<string>();

/**
 * Compares what the providers got in two neighbouring runs; returns the problems found.
 * `unordered`: messages on one topic at one shard and one instant are compared in the order of
 * their 'same' fields rather than as published (in a cluster the shards' relays interleave by
 * scheduling: their order is not the TRE's to keep, and it is sorted by what cannot depend on T).
 */
export function compare(
  base: Received[],
  other: Received[],
  variant: Variant,
  s: Scenario,
  opts: {
    unordered?: boolean;
    /**
     * A shard was late with its compliance results in either run: the report's time may differ.
     * The gateway waits (shardGraceMs) only for shards holding an accepted bid, so whether it
     * waited depends on T's bid being accepted; but the report then lacks the results of that
     * shard's accepted pseudonyms, which the DSM sees anyway: the delay is implied by the content
     * (some accepted pseudonym without a result), itself compared as granted.
     */
    lateCompliance?: boolean;
  } = {},
): string[] {
  const problems: string[] = [];
  const byTopic = (rs: Received[]) => {
    const m = new Map<string, Received[]>();
    for (const r of rs) {
      const key = r.where ? `${r.where} ${r.topic}` : r.topic;
      m.set(key, [...(m.get(key) ?? []), r]);
    }
    if (opts.unordered)
      for (const [key, list] of m) {
        const keyed = list.map((r) => ({ r, k: sameFieldsOf(r) }));
        keyed.sort((a, b) => a.r.at - b.r.at || (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
        m.set(
          key,
          keyed.map((x) => x.r),
        );
      }
    return m;
  };
  const a = byTopic(base);
  const b = byTopic(other);
  const topicsSeen = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const key of topicsSeen) {
    const xs = a.get(key) ?? [];
    const ys = b.get(key) ?? [];
    if (xs.length !== ys.length) {
      problems.push(`${variant}: ${key}: ${xs.length} vs ${ys.length} messages`);
      continue;
    }
    const topic = (xs[0] ?? ys[0])!.topic;
    const kind = kindOf(topic);
    const classes = CLASSES[kind];
    if (!classes) {
      problems.push(`unclassified message kind ${kind} (${key})`);
      continue;
    }
    xs.forEach((x, i) => {
      const y = ys[i]!;
      if (x.at !== y.at && !(kind === 'dsm/compliance' && opts.lateCompliance))
        problems.push(`${variant}: ${key} #${i}: sent at ${x.at} vs ${y.at}`);
      const fx = fieldsOf(x.payload);
      const fy = fieldsOf(y.payload);
      const ownedByTarget =
        (kind === 'supplier/statement' && fx.get('jws.account') === `acct-${TARGET}`) ||
        (kind === 'dno/aggregate' &&
          s.groups[Number(String(fx.get('groupId')).slice(1))]!.some((blk) => BLOCKS[blk]!.includes(TARGET)));
      for (const path of new Set([...fx.keys(), ...fy.keys()])) {
        const cls = classes[path];
        if (!cls) {
          problems.push(`unclassified field ${kind} ${path}`);
          continue;
        }
        classified.add(`${kind} ${path}`);
        const [vx, vy] = [fx.get(path), fy.get(path)];
        const equal = JSON.stringify(vx) === JSON.stringify(vy);
        if (cls === 'random' || equal || vx === 'element field') continue;
        if (cls === 'same')
          problems.push(`${variant}: ${kind} ${path}: ${JSON.stringify(vx)} vs ${JSON.stringify(vy)}`);
        else if (cls === 'noised') {
          const [p, q] = String(fx.get('epsilon')).split('/').map(Number) as [number, number];
          const sensitivity = (Number(fx.get('noiseScaleWh')) * p) / q;
          if (!ownedByTarget || Math.abs(Number(vx) - Number(vy)) > sensitivity)
            problems.push(
              `${variant}: ${kind} ${path} moved by ${Number(vx) - Number(vy)} (sensitivity ${sensitivity})`,
            );
        } else if (Array.isArray(vx) && Array.isArray(vy)) {
          // A granted shuffled list: at most T's one element differs.
          const rest = [...vy];
          let extra = 0;
          for (const e of vx) {
            const j = rest.indexOf(e);
            if (j >= 0) rest.splice(j, 1);
            else extra++;
          }
          if (extra > 1 || rest.length > 1)
            problems.push(`${variant}: ${kind} ${path}: more than one element differs`);
        } else if (!ownedByTarget) problems.push(`${variant}: ${kind} ${path} differs outside T's own value`);
      }
    });
  }
  return problems;
}
