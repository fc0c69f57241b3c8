/**
 * The monitoring flow through real mTLS clients on a simulated clock: meters publish an interval,
 * the DNO receives one noisy total per group within the stated noise bound; small groups and
 * set-difference groups are refused; an out-of-bounds reading is excluded (and, like missing
 * readings, never counted in what the DNO gets: the release carries the noised total only).
 */
import { type Aggregate, ManualClock, type Receipt } from '@tre/protocol';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { noiseBound } from '../src/monitoring/discrete-laplace.js';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

const T0 = Date.UTC(2026, 2, 2, 12, 0); // interval [12:00, 12:30)
const clock = new ManualClock(T0 + 31 * 60_000);
let fx: TreFixture;
let dno: MqttClient;
const meters = Array.from({ length: 60 }, (_, i) => `mf${i}`);
const received: Aggregate[] = [];

beforeAll(async () => {
  fx = await startTreFixture({
    clock,
    monitoring: { minGroupSize: 50, epsilon: [1, 1], releaseMinutes: 30, releaseDelayMs: 5 * 60_000 },
  });
  for (const m of meters) await fx.issue('meter', m, undefined, { dnoId: 'd1', capacityW: 8_000 });
  dno = await fx.connect('dno', 'd1');
  dno.on('message', (topic, payload) => {
    if (topic.startsWith('tre/v1/dno/d1/aggregate/')) received.push(JSON.parse(payload.toString()));
  });
  await dno.subscribeAsync(['tre/v1/dno/d1/aggregate/+'], { qos: 1 });
});
afterAll(async () => fx?.close());

async function defineGroups(groups: { groupId: string; meters: string[] }[]): Promise<Receipt> {
  const receipt = nextMessage(dno, 'tre/v1/dno/d1/inbox/receipt');
  await dno.publishAsync(
    'tre/v1/dno/d1/groups',
    JSON.stringify({ v: 1, requestId: `g-${groups[0]!.groupId}`, groups }),
    { qos: 1 },
  );
  return JSON.parse((await receipt).payload.toString()) as Receipt;
}

describe('monitoring flow', () => {
  it('refuses a group below the minimum and a set-difference group; accepts a valid one', async () => {
    expect(await defineGroups([{ groupId: 'g-small', meters: meters.slice(0, 10) }])).toMatchObject({
      status: 'refused',
      reason: 'GROUP_TOO_SMALL',
    });
    expect(await defineGroups([{ groupId: 'g1', meters }])).toMatchObject({ status: 'accepted' });
    expect(await defineGroups([{ groupId: 'g1-minus-one', meters: meters.slice(1) }])).toMatchObject({
      status: 'refused',
      reason: 'GROUP_ISOLATES_HOUSEHOLD',
    });
    expect(
      await defineGroups([{ groupId: 'g-foreign', meters: [...meters.slice(0, 49), 'not-mine'] }]),
    ).toMatchObject({ reason: 'NOT_AUTHORIZED' });
  });

  it('releases one noisy total per group within its bound, no counts; excludes out-of-bounds readings', async () => {
    let trueTotal = 0;
    const publishes: Promise<unknown>[] = [];
    for (const [i, m] of meters.entries()) {
      if (i >= 57) continue; // 3 meters missing
      const c = await fx.connect('meter', m);
      const e1 = 100 + i;
      const e2 = i === 0 ? 99_999 : 150 + i; // meter 0: second half above 8 kW x 15 min -> excluded
      if (i !== 0) trueTotal += e1 + e2;
      const reading = (k: number, energyWh: number, registerWh: number) =>
        JSON.stringify({
          v: 1,
          requestId: `m${i}-${k}`,
          intervalStart: new Date(T0 + k * 900_000).toISOString(),
          intervalMinutes: 15,
          energyWh,
          registerWh,
        });
      publishes.push(
        c
          .publishAsync(`tre/v1/meter/${m}/reading`, reading(0, e1, 10_000 + e1), { qos: 1 })
          .then(() =>
            c.publishAsync(`tre/v1/meter/${m}/reading`, reading(1, e2, 10_000 + e1 + e2), { qos: 1 }),
          ),
      );
    }
    await Promise.all(publishes);
    clock.advance(10 * 60_000); // past 12:30 + 5 min delay
    for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    expect(received).toHaveLength(1);
    const a = received[0] as Aggregate;
    expect(a).toMatchObject({
      groupId: 'g1',
      intervalStart: new Date(T0).toISOString(),
      intervalMinutes: 30,
      epsilon: '1/1',
    });
    // The release is the noised total and its noise parameters, nothing else.
    expect(Object.keys(a).sort()).toEqual([
      'bound95Wh',
      'epsilon',
      'groupId',
      'intervalMinutes',
      'intervalStart',
      'noiseScaleWh',
      'noisyTotalWh',
      'v',
    ]);
    expect(fx.tre.monitoring.stats).toMatchObject({
      contributions: 56,
      excluded: 1,
      missing: 3,
      outOfBudget: 0,
      clamped: 0,
      clampedWh: 0,
    });
    // Delta = min(default bound 5,500 Wh, 8 kW x 30 min): below the bound, capacity caps it.
    expect(a.noiseScaleWh).toBe(4_000);
    const bound = noiseBound(a.noiseScaleWh, 1e-9); // fails with probability 1e-9
    expect(Math.abs(a.noisyTotalWh - trueTotal)).toBeLessThan(bound);
    expect(JSON.stringify(a)).not.toMatch(/mf\d/);
    // Nothing more for this interval, even if time moves on.
    clock.advance(30 * 60_000);
    await new Promise((r) => setTimeout(r, 100));
    expect(received.filter((r) => r.intervalStart === new Date(T0).toISOString())).toHaveLength(1);
  });

  it('charged epsilon to each included household once', async () => {
    const spent = fx.tre.store.db
      .prepare('SELECT count(*) AS n, max(spent_micro) AS mx FROM privacy_budget')
      .get() as { n: number; mx: number };
    expect(spent).toEqual({ n: 56, mx: 1_000_000 });
  });
});
