/**
 * A demand-response round spanning three shards in one process, joined in memory
 * (support/memory-cluster.ts). The DSM is connected to s1, which makes s1 the round's gateway;
 * households live in every shard and bid there. Checked here:
 *  - the DSM gets one bids message holding the union, shuffled across shards;
 *  - the acceptance at s1 credits each household in its own shard's ledger, once, even when the
 *    DSM sends it again;
 *  - the DSM gets one compliance report, which includes an override made in another shard;
 *  - a shard whose batch comes after the grace is reported late and its bids lapse;
 *  - a gateway that restarts between its deadline and the release (its round kept in its store)
 *    takes the batches that come after, releases every bid once and forwards the acceptance;
 *    a batch delivered twice is kept once;
 *  - nothing the DSM got, and no message between shards, names a household, an account or a bid.
 */
import { type Compliance, ManualClock, type PseudoBids, signContent, topics } from '@tre/protocol';
import type { Flows } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ShardCluster } from '../src/cluster/shard-cluster.js';
import { flowContext } from './support/flow-context.js';
import { memoryCluster, spreadHouseholds } from './support/memory-cluster.js';

const Q = 15 * 60_000;
const MIN = 60_000;
const EVENT_DAY = Date.UTC(2026, 2, 18); // a Wednesday
const WINDOW = EVENT_DAY + 18 * 3_600_000; // 18:00-19:00
const COMPLIANCE_GRACE = 30 * MIN;
const SHARD_GRACE = MIN;
const SHARDS = ['s1', 's2', 's3'] as const;
const clock = new ManualClock(EVENT_DAY + 12 * 3_600_000);
const mc = memoryCluster(SHARDS);

/** 30 households, 10 per shard: h0 in s1, h1 in s2, h2 in s3, ... */
const households = spreadHouseholds(30, SHARDS);
const shardOfMeter = (m: string) => households.find((h) => h.meterId === m)!.shard;
const quantity = (i: number) => 100 + i;
const price = (i: number) => 1_000 + 10 * i;
const bidId = (event: string, m: string) => `household-bid-${event}-${m}`;

/** s3's bid batches can be held back, to make s3 late. */
const held: (() => Promise<void>)[] = [];
let holdS3Batches = false;
const s3Link = (registry: Parameters<ReturnType<typeof mc.shard>>[0]): ShardCluster => {
  const link = mc.shard('s3')(registry);
  return {
    ...link,
    send: async (to, kind, body) => {
      if (holdS3Batches && kind === 'dr.batch') held.push(() => link.send(to, kind, body));
      else await link.send(to, kind, body);
    },
  };
};

type Shard = { f: ReturnType<typeof flowContext>; flows: Flows };
const shards = new Map<string, Shard>();
const at = (s: string) => shards.get(s)!;
let dsm: ReturnType<Shard['f']['party']>;
/** Where the DR rounds begin in `mc.crossed` (before that: the regulator's registry). */
let crossedFrom = 0;

const flowOptions = { demandResponse: { complianceGraceMs: COMPLIANCE_GRACE, shardGraceMs: SHARD_GRACE } };

beforeAll(async () => {
  for (const s of SHARDS) {
    const f = flowContext(clock.now(), {
      cluster: s === 's3' ? s3Link : mc.shard(s),
      shard: s,
      clock,
      durable: s === 's1', // the gateway restarts on its store
    });
    f.ctx.registry.serve(f.ctx.router); // as tre.ts does
    const flows = f.flows(flowOptions);
    shards.set(s, { f, flows });
  }
  const regulator = at('s1').f.party({ role: 'regulator', id: 'r1' });
  const jws = await signContent(
    'registryUpdate',
    { v: 1, households, issuedAt: new Date(clock.now() - MIN).toISOString() },
    regulator.privateKey,
  );
  expect(await regulator.send(topics.registry('r1'), { v: 1, requestId: 'reg-1', jws })).toMatchObject({
    status: 'accepted',
  });
  await mc.settled();
  // A baseline for everyone: 250 Wh per quarter hour in the window the day before.
  for (const h of households) await readings(h.meterId, WINDOW - 86_400_000, 250);
  dsm = at('s1').f.party({ role: 'dsm', id: 'x1' });
  crossedFrom = mc.crossed.length;
});
afterAll(async () => {
  for (const { f, flows } of shards.values()) {
    await flows.stop();
    f.close();
  }
});

const registers = new Map<string, number>();
/** Four 15-minute readings of a meter from `from`, `wh` each, sent to its own shard. */
async function readings(m: string, from: number, wh: number) {
  const meter = at(shardOfMeter(m)).f.party({ role: 'meter', id: m });
  for (let t = from; t < from + 4 * Q; t += Q) {
    registers.set(m, (registers.get(m) ?? 100_000) + wh);
    const r = await meter.send(topics.reading(m), {
      v: 1,
      requestId: `household-reading-req-${t}`,
      intervalStart: new Date(t).toISOString(),
      intervalMinutes: 15,
      energyWh: wh,
      registerWh: registers.get(m),
    });
    expect(r.status, r.message).toBe('accepted');
  }
}

const eventOf = (eventId: string, windowStart: number) => ({
  v: 1,
  eventId,
  dsmId: 'x1',
  windowStart: new Date(windowStart).toISOString(),
  windowEnd: new Date(windowStart + 3_600_000).toISOString(),
  bidDeadline: new Date(windowStart - 2 * 3_600_000).toISOString(),
  acceptBy: new Date(windowStart - 3_600_000).toISOString(),
  requestedReductionWh: 1_000,
  priceCapPerMWh: 400_000,
});

async function raise(event: ReturnType<typeof eventOf>) {
  const receipt = await dsm.send(topics.drEvent('x1'), {
    v: 1,
    requestId: `dsm-event-${event.eventId}`,
    jws: await signContent('drEvent', event, dsm.privateKey),
  });
  expect(receipt).toMatchObject({ status: 'accepted' });
  await mc.settled();
}

async function bid(eventId: string, i: number, label = eventId) {
  const m = `h${i}`;
  const r = await at(shardOfMeter(m))
    .f.party({ role: 'meter', id: m })
    .send(topics.bid(m), {
      v: 1,
      requestId: `household-bid-req-${eventId}-${i}`,
      bidId: bidId(label, m),
      eventId,
      quantityWh: quantity(i),
      pricePerMWh: price(i),
    });
  expect(r.status, r.message).toBe('accepted');
}

const acceptance = async (eventId: string, accepted: string[], requestId: string) => ({
  v: 1,
  requestId,
  jws: await signContent('drAcceptance', { v: 1, eventId, dsmId: 'x1', accepted }, dsm.privateKey),
});

/** What reached a shard's connections on a topic. */
const publishedAt = (s: string, topic: string) => at(s).f.published.filter((p) => p.topic === topic);
const ledger = (s: string, kinds: string) =>
  at(s)
    .f.ctx.store.db.prepare(
      `SELECT meter_id AS m, sum(amount_micro) AS micro FROM ledger WHERE kind LIKE '${kinds}' GROUP BY meter_id ORDER BY meter_id`,
    )
    .all() as { m: string; micro: number }[];
/** The outcome notices a shard sent its households in an event (meter -> outcome). */
const outcomesAt = (s: string, eventId: string, kind: string) =>
  at(s)
    .f.published.filter((p) => p.topic.endsWith('/inbox/dr-outcome'))
    .map(
      (p) =>
        JSON.parse(p.payload) as {
          outcome: {
            meterId: string;
            eventId: string;
            kind: string;
            outcome: string;
            creditMicroMinor?: number;
          };
        },
    )
    .filter((n) => n.outcome.eventId === eventId && n.outcome.kind === kind)
    .map((n) => [n.outcome.meterId, n.outcome.outcome, n.outcome.creditMicroMinor]);

async function until(check: () => void) {
  await vi.waitFor(async () => {
    await mc.settled();
    check();
  });
  expect(mc.errors).toEqual([]);
}

describe('a DR round over three shards', () => {
  const e1 = eventOf('e1', WINDOW);
  const bidsTopic = topics.pseudoBids('x1', 'e1');
  /** pseudonym -> [shard, household index], read from each shard's own book at the release. */
  const owner = new Map<string, [string, number]>();
  let released: PseudoBids;

  it('every shard gets the event with s1 as its gateway, and each household bids in its own shard', async () => {
    await raise(e1);
    for (const s of SHARDS) expect(at(s).flows.drBook.gatewayOf('e1')).toBe('s1');
    // Only the shard the DSM is connected to answered it.
    for (const s of ['s2', 's3'])
      expect(at(s).f.published.filter((p) => p.topic.endsWith('/inbox/receipt'))).toEqual([]);
    for (const h of households) await bid('e1', Number(h.meterId.slice(1)));
    // A household is known in its own shard only.
    const elsewhere = await at('s1').f.party({ role: 'meter', id: 'h1' }).send(topics.bid('h1'), {
      v: 1,
      requestId: 'household-bid-req-wrong-shard',
      bidId: 'household-bid-wrong-shard',
      eventId: 'e1',
      quantityWh: 100,
      pricePerMWh: 1_000,
    });
    expect(elsewhere).toMatchObject({ reason: 'UNKNOWN_METER' });
    expect(at('s1').f.published.filter((p) => p.topic === bidsTopic)).toEqual([]);
  });

  it('at the deadline the gateway releases the union once, shuffled across shards', async () => {
    clock.advance(Date.parse(e1.bidDeadline) - clock.now());
    await until(() => expect(publishedAt('s1', bidsTopic)).toHaveLength(1));
    released = JSON.parse(publishedAt('s1', bidsTopic)[0]!.payload) as PseudoBids;
    expect(Object.keys(released).sort()).toEqual(['bids', 'eventId', 'v']);
    for (const s of SHARDS)
      for (const b of at(s).flows.drBook.bidsOf('e1', 'live'))
        owner.set(b.pseudonym, [s, Number(b.meter_id.slice(1))]);
    expect(owner.size).toBe(30);
    expect(released.bids).toHaveLength(30);
    for (const b of released.bids) {
      expect(Object.keys(b).sort()).toEqual(['pricePerMWh', 'pseudonym', 'quantityWh']);
      const [, i] = owner.get(b.pseudonym)!;
      expect([b.quantityWh, b.pricePerMWh]).toEqual([quantity(i), price(i)]);
    }
    // Shuffled once over the union: not one shard's bids after another's. Grouped, 10 bids from
    // each of 3 shards make 3 runs; a uniform shuffle makes about 20 (3 or fewer: p < 1e-11).
    const order = released.bids.map((b) => owner.get(b.pseudonym)![0]);
    const runs = order.filter((s, k) => k === 0 || s !== order[k - 1]).length;
    expect(runs).toBeGreaterThan(3);
    // One batch from each shard to the gateway; only s1, the gateway the DSM is connected to,
    // published the bids: the union is not relayed (it would reach no one more).
    const crossed = mc.crossed.slice(crossedFrom);
    expect(
      crossed
        .filter((c) => c.kind === 'dr.batch')
        .map((c) => `${c.from}>${c.to}`)
        .sort(),
    ).toEqual(['s1>s1', 's2>s1', 's3>s1']);
    expect(
      crossed.filter((c) => c.kind === 'provider.outbound' && JSON.parse(c.body).topic === bidsTopic),
    ).toEqual([]);
    expect(publishedAt('s1', bidsTopic)).toHaveLength(1);
    for (const s of ['s2', 's3']) expect(publishedAt(s, bidsTopic)).toEqual([]);
  });

  /** Even households are accepted: 5 in each shard. */
  const accepted = (i: number) => i % 2 === 0;

  it('the acceptance at the gateway credits each household in its own shard, once', async () => {
    const chosen = released.bids.filter((b) => accepted(owner.get(b.pseudonym)![1])).map((b) => b.pseudonym);
    expect(chosen).toHaveLength(15);
    const envelope = await acceptance('e1', chosen, 'dsm-accept-1');
    expect(await dsm.send(topics.accept('x1', 'e1'), envelope)).toMatchObject({
      status: 'accepted',
      message: 'acceptance recorded',
    });
    const expected = (s: string) =>
      households
        .map((h, i) => ({ h, i }))
        .filter(({ h, i }) => h.shard === s && accepted(i))
        .map(({ h, i }) => ({ m: h.meterId, micro: -quantity(i) * price(i) }))
        .sort((a, b) => (a.m < b.m ? -1 : 1));
    await until(() => {
      for (const s of SHARDS) expect(ledger(s, 'dr-credit')).toEqual(expected(s));
    });
    expect(ledger('s2', 'dr-credit')).toContainEqual({ m: 'h4', micro: -104 * 1_040 });
    // Each shard told all its bidders, with one signed round of its own.
    for (const s of SHARDS) {
      const told = outcomesAt(s, 'e1', 'acceptance');
      expect(told).toHaveLength(10);
      for (const [m, outcome, credit] of told) {
        const i = Number(String(m).slice(1));
        expect(shardOfMeter(String(m))).toBe(s);
        expect([outcome, credit]).toEqual(
          accepted(i) ? ['accepted', -quantity(i) * price(i)] : ['not-accepted', undefined],
        );
      }
    }
    // The acceptance went to every shard that sent bids (each verified the DSM's signature itself).
    const forwarded = mc.crossed.filter((c) => c.kind === 'dr.acceptance');
    expect(forwarded.map((c) => `${c.from}>${c.to}`).sort()).toEqual(['s1>s1', 's1>s2', 's1>s3']);

    // Sent again: a duplicate; forwarded again, and every shard credits once.
    expect(await dsm.send(topics.accept('x1', 'e1'), envelope)).toMatchObject({ duplicate: true });
    await until(() => expect(mc.crossed.filter((c) => c.kind === 'dr.acceptance')).toHaveLength(6));
    for (const s of SHARDS) {
      expect(ledger(s, 'dr-credit')).toEqual(expected(s));
      expect(outcomesAt(s, 'e1', 'acceptance')).toHaveLength(10);
    }
    // Another acceptance of the same event is refused.
    const other = await acceptance('e1', chosen.slice(0, 1), 'dsm-accept-2');
    expect(await dsm.send(topics.accept('x1', 'e1'), other)).toMatchObject({ reason: 'REPLAYED' });
  });

  it('one compliance report from every shard’s results, an override in s2 included', async () => {
    // h4 (s2) overrides its accepted shed; it settles as not delivered whatever it uses.
    const override = await at('s2')
      .f.party({ role: 'meter', id: 'h4' })
      .send(topics.drOverride('h4'), {
        v: 1,
        requestId: 'household-override-h4',
        eventId: 'e1',
        bidId: bidId('e1', 'h4'),
      });
    expect(override).toMatchObject({ status: 'accepted' });
    clock.advance(WINDOW + 3_600_000 + MIN - clock.now());
    // Accepted households with i % 4 = 0 shed (400 Wh against a 1,000 Wh baseline), the others do not.
    const delivers = (i: number) => i % 4 === 0 && i !== 4;
    for (const [i, h] of households.entries())
      if (accepted(i)) await readings(h.meterId, WINDOW, i % 4 === 0 ? 100 : 250);
    const complianceTopic = topics.compliance('x1', 'e1');
    expect(publishedAt('s1', complianceTopic)).toEqual([]);
    // The shards settle at the end of the grace; the gateway would wait SHARD_GRACE more for any late.
    clock.advance(WINDOW + 3_600_000 + COMPLIANCE_GRACE - clock.now());
    await until(() => expect(publishedAt('s1', complianceTopic)).toHaveLength(1));
    const report = JSON.parse(publishedAt('s1', complianceTopic)[0]!.payload) as Compliance;
    expect(Object.keys(report).sort()).toEqual(['eventId', 'results', 'v']);
    expect(Object.fromEntries(report.results.map((r) => [owner.get(r.pseudonym)![1], r.delivered]))).toEqual(
      Object.fromEntries(
        households
          .map((_, i) => i)
          .filter(accepted)
          .map((i) => [i, delivers(i)]),
      ),
    );
    for (const s of ['s2', 's3']) expect(publishedAt(s, complianceTopic)).toHaveLength(1);
    expect(
      mc.crossed
        .filter((c) => c.kind === 'dr.compliance')
        .map((c) => `${c.from}>${c.to}`)
        .sort(),
    ).toEqual(['s1>s1', 's2>s1', 's3>s1']);
    // What the households keep: the whole credit if they delivered, nothing otherwise.
    for (const s of SHARDS)
      expect(ledger(s, 'dr-%')).toEqual(
        households
          .map((h, i) => ({ h, i }))
          .filter(({ h, i }) => h.shard === s && accepted(i))
          .map(({ h, i }) => ({ m: h.meterId, micro: delivers(i) ? -quantity(i) * price(i) : 0 }))
          .sort((a, b) => (a.m < b.m ? -1 : 1)),
      );
    expect(outcomesAt('s2', 'e1', 'settlement')).toContainEqual(['h4', 'not-delivered', 104 * 1_040]);
    // The round ended at the gateway with its report: nothing of it is kept there.
    for (const table of ['dr_gateway_rounds', 'dr_gateway_batches', 'dr_gateway_bids'])
      expect(
        at('s1').f.ctx.store.db.prepare(`SELECT count(*) AS n FROM ${table} WHERE event_id = 'e1'`).get(),
      ).toEqual({ n: 0 });
  });

  it('a shard whose batch comes after the grace is reported late; its bids lapse', async () => {
    const e2 = eventOf('e2', WINDOW + 86_400_000);
    const gateway = at('s1').flows.demandResponse.gateway!;
    const warn = vi.spyOn((gateway as unknown as { deps: { log: { warn: () => void } } }).deps.log, 'warn');
    await raise(e2);
    const bidders = [0, 1, 2, 3, 4, 5]; // two in each shard
    for (const i of bidders) await bid('e2', i);
    const e2Topic = topics.pseudoBids('x1', 'e2');
    holdS3Batches = true;
    clock.advance(Date.parse(e2.bidDeadline) - clock.now());
    await until(() => expect(held).toHaveLength(1));
    expect(publishedAt('s1', e2Topic)).toEqual([]); // waiting for s3
    clock.advance(SHARD_GRACE);
    await until(() => expect(publishedAt('s1', e2Topic)).toHaveLength(1));
    expect(gateway.stats.lateShards).toBe(1);
    expect(warn).toHaveBeenCalledWith({ late: ['s3'] }, expect.stringMatching(/late/));
    const e2Bids = JSON.parse(publishedAt('s1', e2Topic)[0]!.payload) as PseudoBids;
    const pseudonymsOf = (s: string) =>
      at(s)
        .flows.drBook.bidsOf('e2', 'live')
        .map((b) => b.pseudonym);
    expect(e2Bids.bids.map((b) => b.pseudonym).sort()).toEqual(
      [...pseudonymsOf('s1'), ...pseudonymsOf('s2')].sort(),
    );
    // s3 was told: its bids lapsed and its bidders heard they were not accepted.
    await until(() => expect(outcomesAt('s3', 'e2', 'acceptance')).toHaveLength(2));
    expect(outcomesAt('s3', 'e2', 'acceptance')).toEqual(
      expect.arrayContaining([
        ['h2', 'not-accepted', undefined],
        ['h5', 'not-accepted', undefined],
      ]),
    );
    expect(at('s3').flows.drBook.bidsOf('e2', 'live')).toEqual([]);
    // Its batch, when it finally comes, is refused; s3 is told again and tells no one twice.
    holdS3Batches = false;
    await held.shift()!();
    await until(() => expect(gateway.stats.refusedBatches).toBe(1));
    expect(mc.crossed.filter((c) => c.kind === 'dr.late').map((c) => `${c.from}>${c.to}`)).toEqual([
      's1>s3',
      's1>s3',
    ]);
    expect(outcomesAt('s3', 'e2', 'acceptance')).toHaveLength(2);
    expect(publishedAt('s1', e2Topic)).toHaveLength(1);
    // The DSM accepts everything it got: s1 and s2 credit theirs, s3 has nothing to credit.
    const envelope = await acceptance(
      'e2',
      e2Bids.bids.map((b) => b.pseudonym),
      'dsm-accept-e2',
    );
    expect(await dsm.send(topics.accept('x1', 'e2'), envelope)).toMatchObject({ status: 'accepted' });
    await until(() => expect(outcomesAt('s2', 'e2', 'acceptance')).toHaveLength(2));
    const e2Credits = (s: string) =>
      at(s).f.ctx.store.db.prepare("SELECT meter_id FROM ledger WHERE ref = 'e2' ORDER BY meter_id").all();
    expect(e2Credits('s1')).toEqual([{ meter_id: 'h0' }, { meter_id: 'h3' }]);
    expect(e2Credits('s2')).toEqual([{ meter_id: 'h1' }, { meter_id: 'h4' }]);
    expect(e2Credits('s3')).toEqual([]);
  });

  it('a cancelled round sends nothing; a modified one runs through the shard the DSM modified it from', async () => {
    const friday = WINDOW + 2 * 86_400_000;
    const [e3, e4] = [eventOf('e3', friday), eventOf('e4', friday)];
    await raise(e3);
    await raise(e4);
    for (const i of [6, 7, 8]) await bid('e3', i);
    await bid('e4', 9);
    const cancel = await dsm.send(topics.drCancel('x1', 'e3'), {
      v: 1,
      requestId: 'dsm-cancel-e3',
      jws: await signContent(
        'drCancel',
        { v: 1, eventId: 'e3', dsmId: 'x1', issuedAt: new Date(clock.now()).toISOString() },
        dsm.privateKey,
      ),
    });
    expect(cancel).toMatchObject({ status: 'accepted', message: 'event cancelled' });
    // The DSM, now connected to s2, moves e4's deadline: s2 is the next round's gateway.
    const dsmAtS2 = at('s2').f.party({ role: 'dsm', id: 'x1' });
    const terms = {
      bidDeadline: new Date(friday - 90 * MIN).toISOString(),
      acceptBy: new Date(friday - 60 * MIN).toISOString(),
    };
    const modify = await dsmAtS2.send(topics.drModify('x1', 'e4'), {
      v: 1,
      requestId: 'dsm-modify-e4',
      jws: await signContent(
        'drModify',
        { v: 1, eventId: 'e4', dsmId: 'x1', issuedAt: new Date(clock.now()).toISOString(), terms },
        dsmAtS2.privateKey,
      ),
    });
    expect(modify).toMatchObject({ status: 'accepted', message: 'event modified (revision 1)' });
    await mc.settled();
    for (const s of SHARDS) {
      expect(at(s).flows.drBook.event('e3')?.stage).toBe('cancelled');
      expect(at(s).flows.drBook.gatewayOf('e4')).toBe('s2');
    }
    expect(at('s3').flows.drBook.bidsOf('e3', 'voided')).toHaveLength(1);
    expect(at('s1').flows.drBook.bidsOf('e4', 'voided')).toHaveLength(1);
    for (const i of [9, 10, 11]) await bid('e4', i, 'e4r1');
    const batches = () => mc.crossed.filter((c) => c.kind === 'dr.batch').map((c) => JSON.parse(c.body));
    const before = batches().length;
    clock.advance(Date.parse(e3.bidDeadline) - clock.now());
    await until(() => expect(batches().filter((b) => b.eventId === 'e4')).toHaveLength(0));
    expect(batches()).toHaveLength(before); // nothing of e3, not even an empty batch
    clock.advance(Date.parse(terms.bidDeadline) - clock.now());
    const e4Topic = topics.pseudoBids('x1', 'e4');
    await until(() => expect(publishedAt('s2', e4Topic)).toHaveLength(1));
    expect(
      mc.crossed
        .filter((c) => c.kind === 'dr.batch' && JSON.parse(c.body).eventId === 'e4')
        .map((c) => [c.to, JSON.parse(c.body).revision]),
    ).toEqual([
      ['s2', 1],
      ['s2', 1],
      ['s2', 1],
    ]);
    expect((JSON.parse(publishedAt('s2', e4Topic)[0]!.payload) as PseudoBids).bids).toHaveLength(3);
    for (const s of SHARDS) expect(publishedAt(s, topics.pseudoBids('x1', 'e3'))).toEqual([]);
    // Its acceptance belongs at s2 now.
    const none = await acceptance('e4', [], 'dsm-accept-e4');
    expect(await dsm.send(topics.accept('x1', 'e4'), none)).toMatchObject({
      reason: 'EVENT_INVALID',
      message: expect.stringMatching(/shard s2/),
    });
    const signedAtS2 = {
      v: 1,
      requestId: 'dsm-accept-e4',
      jws: await signContent(
        'drAcceptance',
        { v: 1, eventId: 'e4', dsmId: 'x1', accepted: [] },
        dsmAtS2.privateKey,
      ),
    };
    expect(await dsmAtS2.send(topics.accept('x1', 'e4'), signedAtS2)).toMatchObject({ status: 'accepted' });
  });

  it('a gateway that restarts before its release takes the batches after, and releases every bid once', async () => {
    const e5 = eventOf('e5', WINDOW + 3 * 86_400_000);
    await raise(e5);
    const bidders = [12, 13, 14, 15, 16, 17]; // two in each shard
    for (const i of bidders) await bid('e5', i);
    const e5Topic = topics.pseudoBids('x1', 'e5');
    const kept = (sql: string) => at('s1').f.ctx.store.db.prepare(sql).all('e5');
    const batchesKept = () => kept('SELECT shard FROM dr_gateway_batches WHERE event_id = ? ORDER BY shard');
    const bidsKept = () =>
      kept('SELECT shard, pseudonym FROM dr_gateway_bids WHERE event_id = ? ORDER BY shard');
    holdS3Batches = true;
    clock.advance(Date.parse(e5.bidDeadline) - clock.now());
    await until(() => expect(held).toHaveLength(1));
    expect(batchesKept()).toEqual([{ shard: 's1' }, { shard: 's2' }]);
    expect(bidsKept()).toHaveLength(4);
    // s2's batch again (a retry whose answer was lost): kept once.
    const s2Batch = JSON.parse(
      mc.crossed.findLast((c) => c.kind === 'dr.batch' && c.from === 's2' && c.body.includes('"e5"'))!.body,
    );
    const resend = async () => {
      await at('s2').f.ctx.cluster!.send('s1', 'dr.batch', s2Batch);
      await mc.settled();
    };
    await resend();
    expect(batchesKept()).toEqual([{ shard: 's1' }, { shard: 's2' }]);
    expect(bidsKept()).toHaveLength(4);

    // s1 restarts on its store; its round is still waiting for s3.
    const s1 = at('s1');
    s1.flows = await s1.f.restart(s1.flows, flowOptions);
    s1.f.ctx.registry.serve(s1.f.ctx.router);
    const gateway = s1.flows.demandResponse.gateway!;
    await resend();
    expect(bidsKept()).toHaveLength(4);
    expect(publishedAt('s1', e5Topic)).toEqual([]);
    // s3's batch (its link retried it to the shard's new run): the union goes out, once, whole.
    holdS3Batches = false;
    await held.shift()!();
    await until(() => expect(publishedAt('s1', e5Topic)).toHaveLength(1));
    const union = JSON.parse(publishedAt('s1', e5Topic)[0]!.payload) as PseudoBids;
    const live = SHARDS.flatMap((s) =>
      at(s)
        .flows.drBook.bidsOf('e5', 'live')
        .map((b) => b.pseudonym),
    );
    expect(live).toHaveLength(6);
    expect(union.bids.map((b) => b.pseudonym).sort()).toEqual(live.sort());
    // The grace the round was opened with runs out: nothing more; no shard was late.
    clock.advance(SHARD_GRACE);
    await resend(); // a repeat of a batch taken: not refused
    await until(() => expect(publishedAt('s1', e5Topic)).toHaveLength(1));
    expect(gateway.stats).toMatchObject({ released: 1, lateShards: 0, refusedBatches: 0 });
    expect(mc.crossed.filter((c) => c.kind === 'dr.late' && c.body.includes('"e5"'))).toEqual([]);

    // The acceptance at the restarted gateway: credited in every shard.
    const envelope = await acceptance(
      'e5',
      union.bids.map((b) => b.pseudonym),
      'dsm-accept-e5',
    );
    expect(await dsm.send(topics.accept('x1', 'e5'), envelope)).toMatchObject({
      status: 'accepted',
      message: 'acceptance recorded',
    });
    const e5Credits = (s: string) =>
      at(s).f.ctx.store.db.prepare("SELECT meter_id FROM ledger WHERE ref = 'e5' ORDER BY meter_id").all();
    await until(() => {
      for (const s of SHARDS)
        expect(e5Credits(s)).toEqual(
          bidders.filter((i) => shardOfMeter(`h${i}`) === s).map((i) => ({ meter_id: `h${i}` })),
        );
    });
    for (const s of SHARDS) expect(outcomesAt(s, 'e5', 'acceptance')).toHaveLength(2);
  });

  it('a gateway that restarts keeps its grace: a batch that never comes is late at the stored time', async () => {
    const e6 = eventOf('e6', WINDOW + 4 * 86_400_000);
    await raise(e6);
    for (const i of [18, 19, 20]) await bid('e6', i); // one in each shard
    const e6Topic = topics.pseudoBids('x1', 'e6');
    const kept = () =>
      at('s1')
        .f.ctx.store.db.prepare(
          `SELECT (SELECT count(*) FROM dr_gateway_rounds WHERE event_id = 'e6') AS rounds,
             (SELECT count(*) FROM dr_gateway_bids WHERE event_id = 'e6') AS bids`,
        )
        .get();
    holdS3Batches = true;
    clock.advance(Date.parse(e6.bidDeadline) - clock.now());
    await until(() => expect(held).toHaveLength(1));
    expect(kept()).toEqual({ rounds: 1, bids: 2 });
    // Half the grace passes, s1 restarts; the other half: released without s3, which is told.
    clock.advance(SHARD_GRACE / 2);
    const s1 = at('s1');
    s1.flows = await s1.f.restart(s1.flows, flowOptions);
    s1.f.ctx.registry.serve(s1.f.ctx.router);
    const gateway = s1.flows.demandResponse.gateway!;
    clock.advance(SHARD_GRACE / 2 - 1);
    await mc.settled();
    expect(publishedAt('s1', e6Topic)).toEqual([]);
    clock.advance(1);
    await until(() => expect(publishedAt('s1', e6Topic)).toHaveLength(1));
    expect((JSON.parse(publishedAt('s1', e6Topic)[0]!.payload) as PseudoBids).bids).toHaveLength(2);
    expect(gateway.stats).toMatchObject({ released: 1, lateShards: 1 });
    await until(() =>
      expect(outcomesAt('s3', 'e6', 'acceptance')).toEqual([['h20', 'not-accepted', undefined]]),
    );
    // Its batch, when it comes, is refused.
    holdS3Batches = false;
    await held.shift()!();
    await until(() => expect(gateway.stats.refusedBatches).toBe(1));
    expect(publishedAt('s1', e6Topic)).toHaveLength(1);
    // The DSM accepts nothing by acceptBy: the round is forgotten, nothing of it kept.
    clock.advance(Date.parse(e6.acceptBy) - clock.now());
    await until(() => expect(kept()).toEqual({ rounds: 0, bids: 0 }));
  });

  it('nothing the DSM got, and nothing between shards, names a household, an account or a bid', () => {
    // Wherever the DSM is connected.
    const dsmGot = SHARDS.flatMap((s) =>
      at(s)
        .f.published.filter((p) => p.topic.startsWith('tre/v1/dsm/x1/'))
        .map((p) => `${p.topic} ${p.payload}`),
    );
    expect(dsmGot.length).toBeGreaterThan(5);
    const crossed = mc.crossed.slice(crossedFrom);
    const all = [...dsmGot, ...crossed.map((c) => c.body)].join('\n');
    for (const h of households) {
      expect(all).not.toContain(`"${h.meterId}"`);
      expect(all).not.toContain(h.account);
    }
    for (const secret of ['household-bid-', 'household-reading-', 'household-override-'])
      expect(all).not.toContain(secret);
    // What the DR rounds sent between shards: round ids, pseudonyms, quantities, prices, results,
    // the DSM's signed acceptance and its key; nothing else.
    const keys: Record<string, string[]> = {
      'dr.batch': ['bids', 'eventId', 'revision'],
      'dr.acceptance': ['dsmKey', 'eventId', 'jws', 'revision'],
      'dr.compliance': ['eventId', 'results', 'revision'],
      'dr.late': ['eventId', 'revision'],
    };
    for (const c of crossed.filter((c) => c.kind.startsWith('dr.'))) {
      const body = JSON.parse(c.body) as Record<string, unknown>;
      expect(Object.keys(body).sort()).toEqual(keys[c.kind]);
      for (const b of (body.bids ?? []) as object[])
        expect(Object.keys(b).sort()).toEqual(['pricePerMWh', 'pseudonym', 'quantityWh']);
      for (const r of (body.results ?? []) as object[])
        expect(Object.keys(r).sort()).toEqual(['delivered', 'pseudonym']);
    }
  });
});
