/**
 * Three shards in one process, joined in memory (support/memory-cluster.ts): the regulator's
 * registry sent to one shard places each household in exactly one; a DNO connected to another
 * shard defines a group spanning two shards and gets one release with one noise sample, its
 * budgets charged where the households live; a late member shard is left out, never waited for
 * twice; what crossed between shards for a release is a partial sum, no household in it; an owner
 * that restarts while it waits for a partial (the partials kept in its store) releases once, with
 * one noise sample, when the partial comes; a partial delivered twice is kept once.
 */
import { ManualClock, signContent, topics } from '@tre/protocol';
import { type FlowOptions, type Flows, HouseholdRegistry } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ShardCluster } from '../src/cluster/shard-cluster.js';
import { aggregate } from '../src/monitoring/aggregate.js';
import type { RandomSource } from '../src/monitoring/discrete-laplace.js';
import { flowContext } from './support/flow-context.js';
import { memoryCluster, spreadHouseholds } from './support/memory-cluster.js';
import { seededRandom } from './support/seeded-random.js';

const T0 = Date.UTC(2026, 2, 2, 12, 0); // interval [12:00, 12:30)
const Q = 15 * 60_000;
const SHARDS = ['s1', 's2', 's3'] as const;
const clock = new ManualClock(T0);
const mc = memoryCluster(SHARDS);
/** 12 households per shard: h0 in s1, h1 in s2, h2 in s3, ... */
const households = spreadHouseholds(36, SHARDS);
const inShard = (s: string) => households.filter((h) => h.shard === s).map((h) => h.meterId);
const noNoise: RandomSource = {
  uniformInt() {
    throw new Error('only the owner shard draws noise');
  },
};

type Shard = { f: ReturnType<typeof flowContext>; flows: Flows };
const shards = new Map<string, Shard>();
const at = (s: string) => shards.get(s)!;

/** s3's partials can be held back, to be delivered later. */
const held: (() => Promise<void>)[] = [];
let holdS3Partials = false;
const s3Link = (registry: Parameters<ReturnType<typeof mc.shard>>[0]): ShardCluster => {
  const link = mc.shard('s3')(registry);
  return {
    ...link,
    send: async (to, kind, body) => {
      if (holdS3Partials && kind === 'monitoring.partial') held.push(() => link.send(to, kind, body));
      else await link.send(to, kind, body);
    },
  };
};

const flowOptions = (random: RandomSource): FlowOptions => ({
  monitoring: {
    minGroupSize: 10,
    releaseMinutes: 30,
    releaseDelayMs: 5 * 60_000,
    shardGraceMs: 60_000,
    random,
  },
});

beforeAll(async () => {
  for (const s of SHARDS) {
    const f = flowContext(T0, { cluster: s === 's3' ? s3Link : mc.shard(s), shard: s, clock, durable: true });
    f.ctx.registry.serve(f.ctx.router); // as tre.ts does
    // s1 owns the group spanning shards (the first member shard by name), s3 its own group; s2 none.
    const flows = f.flows(flowOptions(s === 's2' ? noNoise : seededRandom(s === 's1' ? 7 : 9)));
    shards.set(s, { f, flows });
  }
});
afterAll(async () => {
  for (const { f, flows } of shards.values()) {
    await flows.stop();
    f.close();
  }
});

const registers = new Map<string, number>();

/** Two 15-minute readings of each meter, sent once the interval [from, from + 30 min) ended. */
async function readings(meters: string[], from: number, wh: (m: string) => number) {
  clock.advance(Math.max(0, from + 2 * Q - clock.now()));
  for (const m of meters) {
    const s = households.find((h) => h.meterId === m)!.shard;
    const meter = at(s).f.party({ role: 'meter', id: m });
    for (let t = from; t < from + 2 * Q; t += Q) {
      const r = await meter.send(topics.reading(m), {
        v: 1,
        requestId: `rd-${t}`,
        intervalStart: new Date(t).toISOString(),
        intervalMinutes: 15,
        energyWh: wh(m),
        registerWh: registers.set(m, (registers.get(m) ?? 100_000) + wh(m)).get(m),
      });
      expect(r.status, r.message).toBe('accepted');
    }
  }
}

/** Advances the clock past an interval's release; `until` holds once every shard did its part. */
async function releaseInterval(start: number, until: () => void) {
  clock.advance(start + 30 * 60_000 + 5 * 60_000 + 1 - clock.now());
  await vi.waitFor(async () => {
    await mc.settled();
    until();
  });
  expect(mc.errors).toEqual([]);
}

/** The releases of one group's interval that reached a shard's connections. */
const aggregatesAt = (s: string, groupId: string, start: number) =>
  at(s)
    .f.published.filter((p) => p.topic === topics.aggregate('d1', groupId))
    .map((p) => JSON.parse(p.payload) as { noisyTotalWh: number; intervalStart: string })
    .filter((a) => a.intervalStart === new Date(start).toISOString());

describe('three shards: the registry and a DNO group spanning shards', () => {
  it('the registry sent to one shard places each household in exactly one', async () => {
    const regulator = at('s1').f.party({ role: 'regulator', id: 'r1' });
    const jws = await signContent(
      'registryUpdate',
      { v: 1, households, issuedAt: new Date(T0 - 60_000).toISOString() },
      regulator.privateKey,
    );
    expect(await regulator.send(topics.registry('r1'), { v: 1, requestId: 'reg-1', jws })).toMatchObject({
      status: 'accepted',
    });
    await mc.settled();
    for (const s of SHARDS) {
      const { registry } = at(s).f.ctx;
      expect(registry.count()).toBe(12);
      for (const h of households) expect(registry.get(h.meterId) !== undefined).toBe(h.shard === s);
      expect(registry.shardOf('h4')).toBe('s2');
      expect(registry.shardsWithHouseholds()).toEqual(['s1', 's2', 's3']);
      expect(registry.metersOfDno('d1').size).toBe(36);
    }
    // Only the shard the regulator is connected to answered it.
    for (const s of ['s2', 's3'])
      expect(at(s).f.published.filter((p) => p.topic.endsWith('/inbox/receipt'))).toEqual([]);
  });

  it('a shard refuses households without a shard, and forgets one that moved away', async () => {
    const { registry } = at('s1').f.ctx;
    const one = households[0]!;
    expect(() => registry.upsert([{ ...one, shard: undefined }])).toThrow(/names no shard/);
    const regulator = at('s1').f.party({ role: 'regulator', id: 'r1' });
    const jws = await signContent(
      'registryUpdate',
      { v: 1, households: [{ ...one, shard: undefined }], issuedAt: new Date(T0 - 30_000).toISOString() },
      regulator.privateKey,
    );
    expect(await regulator.send(topics.registry('r1'), { v: 1, requestId: 'reg-2', jws })).toMatchObject({
      status: 'refused',
      reason: 'MALFORMED',
    });
    // Moved to s2 and back: s1 stops admitting it while it lives elsewhere.
    await registry.upsert([{ ...one, shard: 's2' }]);
    expect(registry.get(one.meterId)).toBeUndefined();
    expect(registry.shardOf(one.meterId)).toBe('s2');
    await registry.upsert([one]);
    expect(registry.get(one.meterId)).toMatchObject({ account: one.account });
    expect(registry.shardOf(one.meterId)).toBe('s1');
  });

  it('the registry CSV takes an optional shard column', () => {
    const csv = 'meterId,supplierId,dnoId,capacityW,account,shard\nm1,sup1,d1,8000,a1,s2\n';
    expect(HouseholdRegistry.parseCsv(csv)).toEqual([
      { meterId: 'm1', supplierId: 'sup1', dnoId: 'd1', capacityW: 8000, account: 'a1', shard: 's2' },
    ]);
    expect(() => HouseholdRegistry.parseCsv(csv.replace(',s2', ',s.2'))).toThrow(/shard/);
    expect(
      HouseholdRegistry.parseCsv('meterId,supplierId,dnoId,capacityW,account\nm1,sup1,d1,8000,a1\n'),
    ).toEqual([{ meterId: 'm1', supplierId: 'sup1', dnoId: 'd1', capacityW: 8000, account: 'a1' }]);
  });

  it('a group over two shards is released once, by its owner, with one noise sample', async () => {
    const members = [...inShard('s1'), ...inShard('s2')];
    const dno = at('s2').f.party({ role: 'dno', id: 'd1' });
    const defined = await dno.send(topics.groups('d1'), {
      v: 1,
      requestId: 'g-1',
      groups: [
        { groupId: 'g-span', meters: members },
        { groupId: 'g-s3', meters: inShard('s3') },
      ],
    });
    expect(defined, defined.message).toMatchObject({ status: 'accepted' });
    await mc.settled();
    for (const s of SHARDS)
      expect(
        at(s)
          .flows.monitoring.groups('d1')
          .map((g) => g.groupId),
      ).toHaveLength(2);

    const wh = (m: string) => 100 + Number(m.slice(1));
    await readings(
      households.map((h) => h.meterId),
      T0,
      wh,
    );
    const exact = members.reduce((sum, m) => sum + 2 * wh(m), 0);
    // s1's draws: the empty interval before T0 (released as the flows started), then this one.
    const draws = seededRandom(7);
    aggregate(0, 4_000, [1, 1], draws);
    const expected = aggregate(exact, 4_000, [1, 1], draws).noisyTotalWh;
    await releaseInterval(T0, () => {
      for (const s of SHARDS) expect(aggregatesAt(s, 'g-span', T0)).toHaveLength(1);
    });
    // Every shard relays it to the DNO's connections there: each has the one release, no second one.
    for (const s of SHARDS) {
      expect(aggregatesAt(s, 'g-span', T0)).toEqual([expect.objectContaining({ noisyTotalWh: expected })]);
      expect(aggregatesAt(s, 'g-s3', T0)).toHaveLength(1);
    }
    // g-span is s1's to release, g-s3 is s3's (each also released the interval before T0, empty).
    expect(at('s1').flows.monitoring.stats.released).toBe(2);
    expect(at('s2').flows.monitoring.stats.released).toBe(0);
    for (const s of SHARDS) expect(at(s).flows.monitoring.stats.failedRuns).toBe(0);
    expect(at('s3').flows.monitoring.stats.released).toBe(2);

    // Budgets are charged where the households live, once each.
    const spent = (s: string, meters: string[]) => at(s).flows.monitoring.budgetSpent(meters);
    expect(spent('s1', inShard('s1')).every((x) => x > 0)).toBe(true);
    expect(spent('s2', inShard('s2')).every((x) => x > 0)).toBe(true);
    expect(spent('s1', inShard('s2')).every((x) => x === 0)).toBe(true);

    // What crossed for the release: s2's partial to the owner, with no household in it.
    const partials = mc.crossed.filter(
      (c) => c.kind === 'monitoring.partial' && JSON.parse(c.body).intervalStart === T0,
    );
    expect(partials.map((c) => [c.from, c.to])).toEqual([['s2', 's1']]);
    expect(JSON.parse(partials[0]!.body)).toEqual({
      dnoId: 'd1',
      groupId: 'g-span',
      intervalStart: T0,
      totalWh: inShard('s2').reduce((sum, m) => sum + 2 * wh(m), 0),
      deltaWh: 4_000,
    });
  });

  it('a member shard that does not answer is left out after the grace, and said so', async () => {
    const next = T0 + 30 * 60_000;
    const wh = () => 50;
    await readings(
      households.map((h) => h.meterId),
      next,
      wh,
    );
    mc.down.add('s2');
    try {
      await releaseInterval(next, () => expect(at('s2').flows.monitoring.stats.contributions).toBe(24));
      clock.advance(60_000); // the owner's grace
      await vi.waitFor(() => expect(aggregatesAt('s1', 'g-span', next)).toHaveLength(1));
    } finally {
      mc.down.delete('s2');
    }
    expect(at('s1').flows.monitoring.stats.lateShards).toBe(1);
  });

  const all = households.map((h) => h.meterId);
  const wh = (m: string) => 20 + Number(m.slice(1));
  const sumOf = (meters: string[]) => meters.reduce((sum, m) => sum + 2 * wh(m), 0);
  /** The partials s1 keeps for g-all's interval. */
  const keptAt = (start: number) =>
    at('s1')
      .f.ctx.store.db.prepare(
        "SELECT shard, total_wh AS totalWh FROM group_partials WHERE group_id = 'g-all' AND interval_start = ? ORDER BY shard",
      )
      .all(start);

  it('an owner that restarts while waiting for a partial releases once, with one noise sample', async () => {
    // A group over all three shards, owned by s1.
    const dno = at('s2').f.party({ role: 'dno', id: 'd1' });
    const defined = await dno.send(topics.groups('d1'), {
      v: 1,
      requestId: 'g-2',
      groups: [{ groupId: 'g-all', meters: all }],
    });
    expect(defined, defined.message).toMatchObject({ status: 'accepted' });
    await mc.settled();
    const start = T0 + 60 * 60_000;
    await readings(all, start, wh);
    const kept = () => keptAt(start);
    holdS3Partials = true;
    await releaseInterval(start, () => {
      expect(held).toHaveLength(1);
      expect(kept()).toEqual([
        { shard: 's1', totalWh: sumOf(inShard('s1')) },
        { shard: 's2', totalWh: sumOf(inShard('s2')) },
      ]);
      expect(aggregatesAt('s1', 'g-span', start)).toHaveLength(1);
    });
    expect(aggregatesAt('s1', 'g-all', start)).toEqual([]);
    // s2's partial again (a retry whose answer was lost): kept once.
    const s2Partial = JSON.parse(
      mc.crossed.findLast((c) => c.kind === 'monitoring.partial' && c.body.includes('"g-all"'))!.body,
    );
    const resend = async () => {
      await at('s2').f.ctx.cluster!.send('s1', 'monitoring.partial', s2Partial);
      await mc.settled();
    };
    await resend();
    expect(kept()).toHaveLength(2);

    // s1 restarts on its store, with a fresh noise source: the release to come is its first draw.
    const s1 = at('s1');
    s1.flows = await s1.f.restart(s1.flows, flowOptions(seededRandom(11)));
    s1.f.ctx.registry.serve(s1.f.ctx.router);
    await resend();
    expect(kept()).toHaveLength(2);
    holdS3Partials = false;
    await held.shift()!();
    await vi.waitFor(async () => {
      await mc.settled();
      for (const s of SHARDS) expect(aggregatesAt(s, 'g-all', start)).toHaveLength(1);
    });
    const expected = aggregate(sumOf(all), 4_000, [1, 1], seededRandom(11)).noisyTotalWh;
    expect(aggregatesAt('s1', 'g-all', start)).toEqual([expect.objectContaining({ noisyTotalWh: expected })]);
    expect(kept()).toEqual([]);
    // Past the owner's grace, and with the partials sent again: nothing more.
    clock.advance(60_000);
    await resend();
    const s3Partial = mc.crossed.findLast((c) => c.kind === 'monitoring.partial' && c.from === 's3')!;
    await at('s3').f.ctx.cluster!.send('s1', 'monitoring.partial', JSON.parse(s3Partial.body));
    await mc.settled();
    expect(kept()).toEqual([]);
    for (const s of SHARDS) expect(aggregatesAt(s, 'g-all', start)).toHaveLength(1);
    expect(s1.flows.monitoring.stats).toMatchObject({ released: 1, lateShards: 0, failedRuns: 0 });
    expect(mc.errors).toEqual([]);
  });

  it('an owner that restarts keeps its grace: a partial that never comes is late at the stored time', async () => {
    const start = T0 + 90 * 60_000;
    await readings(all, start, wh);
    holdS3Partials = true;
    await releaseInterval(start, () => {
      expect(held).toHaveLength(1);
      expect(keptAt(start)).toHaveLength(2);
    });
    // Half the owner's grace passes, s1 restarts; the other half: released without s3.
    clock.advance(30_000);
    const s1 = at('s1');
    s1.flows = await s1.f.restart(s1.flows, flowOptions(seededRandom(12)));
    s1.f.ctx.registry.serve(s1.f.ctx.router);
    clock.advance(30_000 - 1);
    await mc.settled();
    expect(aggregatesAt('s1', 'g-all', start)).toEqual([]);
    clock.advance(1);
    await vi.waitFor(async () => {
      await mc.settled();
      expect(aggregatesAt('s1', 'g-all', start)).toHaveLength(1);
    });
    const expected = aggregate(sumOf([...inShard('s1'), ...inShard('s2')]), 4_000, [1, 1], seededRandom(12));
    expect(aggregatesAt('s1', 'g-all', start)).toEqual([
      expect.objectContaining({ noisyTotalWh: expected.noisyTotalWh }),
    ]);
    expect(s1.flows.monitoring.stats).toMatchObject({ released: 1, lateShards: 1 });
    expect(keptAt(start)).toEqual([]);
    // s3's partial, when it comes, is not kept and releases nothing.
    holdS3Partials = false;
    await held.shift()!();
    await mc.settled();
    expect(keptAt(start)).toEqual([]);
    for (const s of SHARDS) expect(aggregatesAt(s, 'g-all', start)).toHaveLength(1);
    expect(mc.errors).toEqual([]);
  });
});
