/**
 * The provider-view differential test (privacy-differential.test.ts) over a cluster (issue 21):
 * the same random scenario with its 12 households spread over three shards joined in memory
 * (support/memory-cluster.ts; h0 in s1, h1 in s2, ...), so every DNO group and every DR round
 * spans all three. The providers are each connected to a drawn shard (the DSM possibly to
 * different ones to raise, modify, accept and cancel; an acceptance sent to another shard than the
 * round's gateway is refused naming the gateway, then sent there), and sometimes one shard is cut
 * off around one interval's release (a late member shard). What the providers receive at every
 * shard (each shard's connections: its own publishes and what the others relay) is compared, per
 * shard, topic, time and field, between the run as drawn and each neighbouring run, with the same
 * classes as for one TRE. The supplier gets T's statement from T's shard (it learns account ->
 * shard, the regulator's assignment: 'same'). Messages on one topic at one shard and one instant
 * are matched in the order of their 'same' fields: the interleaving of the shards' relays is
 * scheduling, not the TRE's to keep.
 */
import { topics } from '@tre/protocol';
import fc from 'fast-check';
import { decodeJwt } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  classified,
  compare,
  kindOf,
  METERS,
  NEIGHBOURS,
  providerView,
  reached,
  type Scenario,
  scenarios,
} from './support/provider-view.js';

/** Drawn scenarios with their DR and cluster parts set: every path below runs on every run of this file. */
const [drawnA, drawnB, drawnC] = fc.sample(scenarios, { seed: 21, numRuns: 3 }) as [
  Scenario,
  Scenario,
  Scenario,
];
const cheap = (meter: number) => ({ meter, quantityWh: 500, pricePerMWh: 1_000 });
const examples: [Scenario][] = [
  // T's accepted bid the only one in its shard (s1), which is late with its compliance results:
  // the gateway (s2) waits its grace for them only when T's bid is there.
  [
    {
      ...drawnA,
      bids: [cheap(0), cheap(1)],
      acceptAtMost: 200_000,
      dr: { modify: null, cancel: null, overriders: [], targetOverrides: false, overrideWhen: 'early' },
      at: { dno: 0, supplier: 0, dsmEvent: 1, dsmModify: 1, dsmAccept: 1, dsmCancel: 1 },
      lateShard: { shard: 0, interval: 38 },
    },
  ],
  // Modified once released, from another shard (the next round's gateway); accepted there after
  // being told so at a third; T and h4 override early; cancelled once accepted.
  [
    {
      ...drawnB,
      bids: [cheap(0), cheap(4), cheap(5), { meter: 7, quantityWh: 900, pricePerMWh: 120_000 }],
      acceptAtMost: 100_000,
      dr: {
        modify: { stage: 'released', priceCapPerMWh: 110_000 },
        cancel: 'accepted',
        overriders: [4],
        targetOverrides: true,
        overrideWhen: 'early',
      },
      at: { dno: 1, supplier: 2, dsmEvent: 0, dsmModify: 2, dsmAccept: 1, dsmCancel: 0 },
      lateShard: { shard: 1, interval: 5 },
    },
  ],
  // Modified once settled (a second round later in the day); T overrides in the window.
  [
    {
      ...drawnC,
      bids: [cheap(0), cheap(2), cheap(9)],
      acceptAtMost: 100_000,
      dr: {
        modify: { stage: 'settled', priceCapPerMWh: null },
        cancel: null,
        overriders: [9],
        targetOverrides: true,
        overrideWhen: 'late',
      },
      at: { dno: 2, supplier: 1, dsmEvent: 2, dsmModify: 1, dsmAccept: 0, dsmCancel: 2 },
      lateShard: { shard: 2, interval: 44 },
    },
  ],
];

describe('provider view over three shards: neighbouring inputs', () => {
  it('every field every provider receives at any shard is classified, and differs only as its class allows', {
    timeout: 300_000,
  }, async () => {
    let scenariosRun = 0;
    let lateReports = 0;
    await fc.assert(
      fc.asyncProperty(scenarios, async (s) => {
        const t = performance.now();
        const drawn = await providerView(s, 'as-drawn', 'cluster');
        const base = drawn.received;
        if (process.env.DIFF_DEBUG)
          console.log(`one cluster run ${(performance.now() - t).toFixed(0)} ms, ${base.length} messages`);
        const kinds = new Set(base.map((r) => kindOf(r.topic)));
        expect(kinds).toContain('supplier/statement');
        expect(kinds).toContain('dno/aggregate');
        // Every shard's connections got every household's statement, whichever shard issued it.
        for (const where of ['s1', 's2', 's3'])
          expect(
            new Set(
              base
                .filter((r) => r.where === where && kindOf(r.topic) === 'supplier/statement')
                .map((r) => decodeJwt((JSON.parse(r.payload) as { jws: string }).jws).account),
            ),
          ).toEqual(new Set(METERS.map((m) => `acct-${m}`)));
        for (const variant of NEIGHBOURS) {
          scenariosRun++;
          const other = await providerView(s, variant, 'cluster');
          const lateCompliance = drawn.heldKinds.has('dr.compliance') || other.heldKinds.has('dr.compliance');
          if (lateCompliance) lateReports++;
          expect(compare(base, other.received, variant, s, { unordered: true, lateCompliance })).toEqual([]);
        }
      }),
      { numRuns: Number(process.env.DIFF_RUNS ?? 8), examples, endOnFailure: !!process.env.DIFF_DEBUG },
    );
    console.log(
      `provider-view differential over shards: ${scenariosRun} neighbouring runs, ${classified.size} fields compared;`,
      `reached: ${JSON.stringify(reached)}, late compliance ${lateReports}`,
    );
    // The examples make sure every path is taken on every run.
    if (!process.env.DIFF_RUNS) {
      expect(lateReports).toBeGreaterThan(0);
      for (const path of [
        'modified',
        'cancelled',
        'targetOverrideRecorded',
        'acceptanceRedirected',
        'lateMemberShards',
        'lateBidShards',
      ] as const)
        expect(reached[path], path).toBeGreaterThan(0);
    }
  });

  it('a message at one shard only, or out of time, fails the comparison (the check itself can fail)', () => {
    const s = { groups: [[0]] } as Scenario;
    const receipt = (where: string, at: number, message: string) => ({
      where,
      topic: 'tre/v1/dsm/x/inbox/receipt',
      at,
      payload: JSON.stringify({ v: 1, family: 'accept', status: 'refused', requestId: 'a', message }),
    });
    // The same receipt at another shard is another connection's message.
    expect(
      compare([receipt('s1', 0, 'm')], [receipt('s2', 0, 'm')], 'bid-absent', s, { unordered: true }),
    ).toEqual([
      'bid-absent: s1 tre/v1/dsm/x/inbox/receipt: 1 vs 0 messages',
      'bid-absent: s2 tre/v1/dsm/x/inbox/receipt: 0 vs 1 messages',
    ]);
    // Matched in the order of their 'same' fields at one instant; never across instants.
    const two = [receipt('s1', 0, 'a'), receipt('s1', 0, 'b')];
    expect(compare(two, [...two].reverse(), 'bid-absent', s, { unordered: true })).toEqual([]);
    expect(compare(two, [...two].reverse(), 'bid-absent', s)).toHaveLength(2);
    expect(
      compare(
        [receipt('s1', 0, 'a'), receipt('s1', 5, 'b')],
        [receipt('s1', 0, 'b'), receipt('s1', 5, 'a')],
        'bid-absent',
        s,
        {
          unordered: true,
        },
      ),
    ).toEqual([
      'bid-absent: dsm/inbox/receipt message: "a" vs "b"',
      'bid-absent: dsm/inbox/receipt message: "b" vs "a"',
    ]);
    // A compliance report later in one run: only when a shard was late with its results in either.
    const report = (at: number) => ({
      where: 's2',
      topic: topics.compliance('x', 'e1'),
      at,
      payload: JSON.stringify({ v: 1, eventId: 'e1', results: [{ pseudonym: 'p', delivered: true }] }),
    });
    expect(compare([report(1)], [report(2)], 'bid-absent', s, { unordered: true })).toEqual([
      'bid-absent: s2 tre/v1/dsm/x/compliance/e1 #0: sent at 1 vs 2',
    ]);
    expect(
      compare([report(1)], [report(2)], 'bid-absent', s, { unordered: true, lateCompliance: true }),
    ).toEqual([]);
    // A statement of another household than T's that differs.
    const statement = (account: string, totalMinor: number) => ({
      where: 's2',
      topic: topics.statement('s'),
      at: 0,
      payload: JSON.stringify({
        v: 1,
        jws: `e30.${Buffer.from(JSON.stringify({ v: 1, account, totalMinor })).toString('base64url')}.sig`,
      }),
    });
    expect(compare([statement('acct-h1', 5)], [statement('acct-h1', 6)], 'override-flipped', s)).toEqual([
      "override-flipped: supplier/statement jws.totalMinor differs outside T's own value",
    ]);
    expect(compare([statement('acct-h0', 5)], [statement('acct-h0', 6)], 'override-flipped', s)).toEqual([]);
  });
});
