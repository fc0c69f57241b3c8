/**
 * The curious DNO, with only messages the protocol accepts. Attack from issue 16: groups P∪Q∪{h},
 * R∪S, P∪R, Q∪S each pass the pairwise difference rule, yet with exact counts in the releases
 * (included / excluded / missing, or a budget-withheld count) count(G1) - count(P∪R) - count(Q∪S)
 * + count(R∪S) is exactly h's presence. Neighbouring runs (h reports or not; h's reading in or out
 * of bounds; h out of budget or not; h above the regulator's contribution bound or not), with the
 * same noise seed, must give the DNO byte-identical releases except the noised total of the one
 * group h is in, which moves by at most Delta (the bound: h's contribution is clamped to it).
 */
import { type Aggregate, signContent, topics } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { flowContext } from './support/flow-context.js';
import { seededRandom } from './support/seeded-random.js';

const T0 = Date.UTC(2026, 2, 2, 12, 0);
const STEP = 15 * 60_000;
const block = (name: string) => Array.from({ length: 50 }, (_, i) => `${name}${i}`);
const [P, Q, R, S] = [block('p'), block('q'), block('r'), block('s')];
const GROUPS = [
  { groupId: 'g1', meters: [...P, ...Q, 'h'] },
  { groupId: 'g2', meters: [...R, ...S] },
  { groupId: 'g3', meters: [...P, ...R] },
  { groupId: 'g4', meters: [...Q, ...S] },
];

type Variant = 'h-reports' | 'h-silent' | 'h-out-of-bounds' | 'h-no-budget' | 'h-above-bound';
/** The regulator's contribution bound in these runs, Wh per 30 minutes (capacity: 4,000). */
const BOUND_WH = 1_000;

/** Runs one interval's release and returns what the DNO receives (topic -> payloads). */
async function dnoView(variant: Variant): Promise<Map<string, Aggregate[]>> {
  const f = flowContext(T0 - 3_600_000);
  try {
    const flows = f.flows({
      monitoring: {
        minGroupSize: 50,
        releaseMinutes: 30,
        releaseDelayMs: 5 * 60_000,
        random: seededRandom(7),
        dailyBudget: 5,
      },
    });
    const all = [...P, ...Q, ...R, ...S, 'h'];
    await f.ctx.registry.upsert(
      all.map((m) => ({ meterId: m, supplierId: 's', dnoId: 'd', capacityW: 8_000, account: `a-${m}` })),
    );
    const regulator = f.party({ role: 'regulator', id: 'reg' });
    const config = {
      v: 1,
      minBillingPeriod: { unit: 'month', count: 1 },
      contributionBoundWh: BOUND_WH,
      issuedAt: new Date(T0 - 3_600_000).toISOString(),
    };
    expect(
      await regulator.send(topics.regulatorConfig('reg'), {
        v: 1,
        requestId: 'c',
        jws: await signContent('regulatorConfig', config, regulator.privateKey),
      }),
    ).toMatchObject({ status: 'accepted' });
    const dno = f.party({ role: 'dno', id: 'd' });
    expect(await dno.send(topics.groups('d'), { v: 1, requestId: 'g', groups: GROUPS })).toMatchObject({
      status: 'accepted',
    });
    f.clock.advance(T0 + 31 * 60_000 - f.clock.now());
    if (variant === 'h-no-budget') {
      // h has spent today's budget already (earlier releases); the others have not.
      await f.ctx.store.commit((db) =>
        db
          .prepare("INSERT INTO privacy_budget (meter_id, day, spent_micro) VALUES ('h', ?, 5000000)")
          .run('2026-03-02'),
      );
    }
    for (const [i, m] of all.entries()) {
      if (m === 'h' && variant === 'h-silent') continue;
      const meter = f.party({ role: 'meter', id: m });
      // Out of bounds: above 8 kW x 15 min. Above the bound: within capacity, 3,800 Wh in the half hour.
      const e =
        m !== 'h'
          ? 100 + (i % 7)
          : variant === 'h-out-of-bounds'
            ? 9_999
            : variant === 'h-above-bound'
              ? 1_900
              : 100 + (i % 7);
      for (const k of [0, 1])
        await meter.send(topics.reading(m), {
          v: 1,
          requestId: `${m}-${k}`,
          intervalStart: new Date(T0 + k * STEP).toISOString(),
          intervalMinutes: 15,
          energyWh: e,
          registerWh: 10_000 + (k + 1) * e,
        });
    }
    const before = f.published.length;
    f.clock.advance(10 * 60_000);
    await flows.monitoring.releaseDue();
    const view = new Map<string, Aggregate[]>();
    for (const p of f.published.slice(before)) {
      const parsed = p.topic.split('/');
      if (parsed[2] !== 'dno') continue;
      view.set(p.topic, [...(view.get(p.topic) ?? []), JSON.parse(p.payload) as Aggregate]);
    }
    await flows.stop();
    return view;
  } finally {
    f.close();
  }
}

describe('DNO view: counts cannot isolate a household', () => {
  it('neighbouring runs differ only in the noised total of the group h is in, by at most Delta', async () => {
    const base = await dnoView('h-reports');
    expect([...base.keys()].sort()).toEqual(GROUPS.map((g) => topics.aggregate('d', g.groupId)).sort());
    for (const m of [...base.values()].flat()) expect(m.noiseScaleWh).toBe(BOUND_WH); // Delta = the bound
    for (const variant of ['h-silent', 'h-out-of-bounds', 'h-no-budget', 'h-above-bound'] as const) {
      const other = await dnoView(variant);
      expect([...other.keys()].sort()).toEqual([...base.keys()].sort());
      for (const [topic, messages] of base) {
        const theirs = other.get(topic)!;
        expect(theirs).toHaveLength(messages.length);
        messages.forEach((m, i) => {
          const o = theirs[i]!;
          const { noisyTotalWh: a, ...restA } = m;
          const { noisyTotalWh: b, ...restB } = o;
          expect(restB, `${variant} ${topic}`).toEqual(restA);
          if (topic.endsWith('/g1')) expect(Math.abs(a - b)).toBeLessThanOrEqual(m.noiseScaleWh);
          else expect(b, `${variant} ${topic}`).toBe(a);
        });
      }
    }
  });
});
