/**
 * Bounds-check alerts go to the household and to the regulator in force (naming the meter: the
 * regulator registers households by id), never to a provider. The regulator's signed configuration
 * sets the per-household contribution bound of the DNO releases: without one the default applies,
 * a newer one applies from the next release, an older one is refused.
 */
import { type Aggregate, type Alert, signContent, topics } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { flowContext } from './support/flow-context.js';

const T0 = Date.UTC(2026, 2, 2, 12, 0);

describe('bounds-check alerts', () => {
  it('reach the household and the regulator, no provider', async () => {
    const f = flowContext(T0 + 3_600_000);
    try {
      const flows = f.flows();
      await f.ctx.registry.upsert([
        { meterId: 'a1', supplierId: 's', dnoId: 'd', capacityW: 4_000, account: 'x' },
      ]);
      const regulator = f.party({ role: 'regulator', id: 'reg' });
      const config = {
        v: 1,
        minBillingPeriod: { unit: 'month', count: 1 },
        issuedAt: new Date(T0).toISOString(),
      };
      expect(
        await regulator.send(topics.regulatorConfig('reg'), {
          v: 1,
          requestId: 'c',
          jws: await signContent('regulatorConfig', config, regulator.privateKey),
        }),
      ).toMatchObject({ status: 'accepted' });
      const meter = f.party({ role: 'meter', id: 'a1' });
      const refused = await meter.send(topics.reading('a1'), {
        v: 1,
        requestId: 'r',
        intervalStart: new Date(T0).toISOString(),
        intervalMinutes: 15,
        energyWh: 5_000, // above 4 kW x 15 min
        registerWh: 5_000,
      });
      expect(refused).toMatchObject({ status: 'refused', reason: 'OUT_OF_BOUNDS' });
      const alerts = f.published.filter((p) => p.topic.endsWith('/inbox/alert'));
      expect(alerts.map((a) => a.topic).sort()).toEqual(
        [
          topics.inbox({ role: 'meter', id: 'a1' }, 'alert'),
          topics.inbox({ role: 'regulator', id: 'reg' }, 'alert'),
        ].sort(),
      );
      const toRegulator = JSON.parse(alerts.find((a) => a.topic.includes('/regulator/'))!.payload) as Alert;
      expect(toRegulator).toMatchObject({ meterId: 'a1', kind: 'reading-out-of-bounds' });
      const toHousehold = JSON.parse(alerts.find((a) => a.topic.includes('/meter/'))!.payload) as Alert;
      expect(toHousehold.meterId).toBeUndefined();
      await flows.stop();
    } finally {
      f.close();
    }
  });
});

describe("the contribution bound from the regulator's signed configuration", () => {
  const METERS = ['b0', 'b1', 'b2', 'b3'];

  /** Four 17.25 kW households in one group; b0 draws `heavyWh` per 15 minutes, the others 100. */
  async function setUp(releaseMinutes: 15 | 30) {
    const f = flowContext(T0 - 3_600_000);
    const flows = f.flows({
      monitoring: { minGroupSize: 3, releaseMinutes, releaseDelayMs: 5 * 60_000 },
    });
    await f.ctx.registry.upsert(
      METERS.map((m) => ({ meterId: m, supplierId: 's', dnoId: 'd', capacityW: 17_250, account: `a-${m}` })),
    );
    const dno = f.party({ role: 'dno', id: 'd' });
    expect(
      await dno.send(topics.groups('d'), {
        v: 1,
        requestId: 'g',
        groups: [{ groupId: 'g', meters: METERS }],
      }),
    ).toMatchObject({ status: 'accepted' });
    const regulator = f.party({ role: 'regulator', id: 'reg' });
    const meters = METERS.map((m) => f.party({ role: 'meter', id: m }));
    const registers = METERS.map(() => 10_000);
    const step = releaseMinutes * 60_000;
    return {
      f,
      flows,
      async configure(issuedAt: number, contributionBoundWh?: number) {
        const config = {
          v: 1,
          minBillingPeriod: { unit: 'month', count: 1 },
          ...(contributionBoundWh !== undefined && { contributionBoundWh }),
          issuedAt: new Date(issuedAt).toISOString(),
        };
        return regulator.send(topics.regulatorConfig('reg'), {
          v: 1,
          requestId: `c-${issuedAt}`,
          jws: await signContent('regulatorConfig', config, regulator.privateKey),
        });
      },
      /** Readings of release interval k (15-minute readings), then its release. */
      async release(k: number, heavyWh: number): Promise<Aggregate> {
        const start = T0 + k * step;
        f.clock.advance(start + step + 60_000 - f.clock.now()); // readings come after their interval
        for (const [i, m] of METERS.entries())
          for (let t = start; t < start + step; t += 15 * 60_000) {
            const wh = i === 0 ? heavyWh : 100;
            registers[i]! += wh;
            await meters[i]!.send(topics.reading(m), {
              v: 1,
              requestId: `${m}-${t}`,
              intervalStart: new Date(t).toISOString(),
              intervalMinutes: 15,
              energyWh: wh,
              registerWh: registers[i]!,
            });
          }
        f.clock.advance(start + step + 5 * 60_000 + 1 - f.clock.now());
        await flows.monitoring.releaseDue();
        const mine = f.published
          .filter((p) => p.topic === topics.aggregate('d', 'g'))
          .map((p) => JSON.parse(p.payload) as Aggregate)
          .filter((a) => a.intervalStart === new Date(start).toISOString());
        expect(mine).toHaveLength(1);
        return mine[0]!;
      },
    };
  }

  it('the default without one; a newer bound from the next release; an older one refused; absent again: the default', async () => {
    const s = await setUp(30);
    try {
      const { stats } = s.flows.monitoring;
      // No configuration: the default bound, 5,500 Wh per 30 minutes (capacity would give 8,625).
      const first = await s.release(0, 2_900); // b0: 5,800 Wh in the half hour
      expect(first).toMatchObject({ noiseScaleWh: 5_500, epsilon: '1/1' });
      expect(stats).toMatchObject({ clamped: 1, clampedWh: 300 });
      // A configuration without the bound: still the default.
      expect(await s.configure(T0)).toMatchObject({ status: 'accepted' });
      expect((await s.release(1, 2_900)).noiseScaleWh).toBe(5_500);
      // A newer one with a bound: the next release uses it; the releases made before keep theirs.
      expect(await s.configure(T0 + 1, 2_000)).toMatchObject({ status: 'accepted' });
      expect(s.flows.regulatorConfig.contributionBoundWh()).toBe(2_000);
      const third = await s.release(2, 2_900);
      expect(third.noiseScaleWh).toBe(2_000);
      expect(third.bound95Wh).toBeLessThan(first.bound95Wh);
      expect(stats).toMatchObject({ clamped: 3, clampedWh: 300 + 300 + 3_800 });
      // An older signed configuration cannot be replayed over it.
      expect(await s.configure(T0 - 1, 9_000)).toMatchObject({ status: 'refused', reason: 'REPLAYED' });
      expect((await s.release(3, 100)).noiseScaleWh).toBe(2_000);
      // A newer one without the bound replaces it as a whole: the default again.
      expect(await s.configure(T0 + 2)).toMatchObject({ status: 'accepted' });
      expect((await s.release(4, 100)).noiseScaleWh).toBe(5_500);
      expect(stats.clamped).toBe(3);
      await s.flows.stop();
    } finally {
      s.f.close();
    }
  });

  it('15-minute releases use half the 30-minute bound', async () => {
    const s = await setUp(15);
    try {
      expect((await s.release(0, 100)).noiseScaleWh).toBe(2_750);
      expect(await s.configure(T0, 2_000)).toMatchObject({ status: 'accepted' });
      expect((await s.release(1, 1_500)).noiseScaleWh).toBe(1_000);
      expect(s.flows.monitoring.stats).toMatchObject({ clamped: 1, clampedWh: 500 });
      await s.flows.stop();
    } finally {
      s.f.close();
    }
  });

  it('a bound the schema does not allow is refused', async () => {
    const s = await setUp(30);
    try {
      for (const bad of [0, 1.5, 500_001])
        expect(await s.configure(T0, bad)).toMatchObject({ status: 'refused' });
      expect(s.flows.regulatorConfig.contributionBoundWh()).toBe(5_500);
      await s.flows.stop();
    } finally {
      s.f.close();
    }
  });
});
