/**
 * The lean ingest path: readings of one tick written as one batch (one multi-row INSERT, neighbours
 * seen inside the batch, hooks in savepoints of their own), the household registry's lookup cache
 * and the tariff book's parsed-tariff cache (same answers as without them, never stale, never
 * holding what was rolled back).
 */
import type { Tariff } from '@tre/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { TariffBook } from '../src/billing/tariff-book.js';
import { HouseholdRegistry } from '../src/registry/household-registry.js';
import { Store } from '../src/store/store.js';
import { flowContext, testDataKey } from './support/flow-context.js';

const T0 = Date.UTC(2026, 2, 2);
const Q = 15 * 60_000;
const nextTick = () => new Promise((r) => setImmediate(r));

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function ingestContext() {
  const f = flowContext(T0 + 30 * 24 * 3_600_000, { durable: true });
  cleanups.push(() => f.close());
  const flows = f.flows();
  cleanups.unshift(() => flows.stop());
  const meter = async (id: string) => {
    await f.ctx.registry.upsert([
      { meterId: id, supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: `a-${id}` },
    ]);
    const party = f.party({ role: 'meter', id });
    let seq = 0;
    return (i: number, registerWh: number, energyWh: number) =>
      party.send(`tre/v1/meter/${id}/reading`, {
        v: 1,
        requestId: `${id}-${++seq}`,
        intervalStart: new Date(T0 + i * Q).toISOString(),
        intervalMinutes: 15,
        energyWh,
        registerWh,
      });
  };
  const stored = (id: string) =>
    f.ctx.store.db
      .prepare('SELECT interval_start, effective_wh, status FROM readings WHERE meter_id = ? ORDER BY 1')
      .all(id) as { interval_start: number; effective_wh: number; status: string }[];
  return { f, flows, meter, stored };
}

describe('readings of one tick are one batch', () => {
  it('is one write, and a neighbour earlier in the batch counts for the register difference', async () => {
    const { f, meter, stored } = ingestContext();
    const send = await meter('b1');
    const before = f.ctx.store.stats.writes;
    const results = await Promise.all([
      send(0, 1_000, 100),
      send(1, 1_300, 9_999), // reported energy ignored: 300 from the registers
      send(2, 1_350, 9_999),
      send(3, 1_350, 0),
    ]);
    expect(results.map((r) => r.status)).toEqual(['accepted', 'accepted', 'accepted', 'accepted']);
    expect(f.ctx.store.stats.writes - before).toBe(1);
    expect(stored('b1').map((r) => r.effective_wh)).toEqual([100, 300, 50, 0]);
  });

  it('a resend in the same batch is a duplicate, a different reading for the interval is refused', async () => {
    const { meter, stored } = ingestContext();
    const send = await meter('b2');
    const [first, again, other] = await Promise.all([
      send(0, 1_000, 100),
      send(0, 1_000, 100),
      send(0, 1_001, 101),
    ]);
    expect(first).toMatchObject({ status: 'accepted' });
    expect(first).not.toHaveProperty('duplicate');
    expect(again).toMatchObject({ status: 'accepted', duplicate: true });
    expect(other).toMatchObject({ status: 'refused', reason: 'CONFLICTING_DUPLICATE' });
    expect(stored('b2')).toEqual([{ interval_start: T0, effective_wh: 100, status: 'ok' }]);
  });

  it('a hook that throws undoes its own writes and fails that reading only', async () => {
    const { f, flows, meter, stored } = ingestContext();
    flows.ingest.onCommitted((_db, r) =>
      flows.readings.insertAlert(r.meterId, 'reading-out-of-bounds', 'x', 0),
    );
    flows.ingest.onCommitted((_db, r) => {
      if (r.intervalStart === T0 + 2 * Q) throw new Error('hook failed');
    });
    const send = await meter('b3');
    const results = await Promise.all([
      send(0, 100, 100),
      send(2, 300, 100),
      send(4, 500, 100),
      send(2, 300, 100), // a resend in the same batch: not acknowledged either
    ]);
    expect(
      results.map((r) => r.status),
      JSON.stringify(results),
    ).toEqual(['accepted', 'refused', 'accepted', 'refused']);
    expect(results[1]).toMatchObject({ reason: 'INTERNAL', requestId: 'b3-2' }); // its requestId echoed
    expect(results[3]).toMatchObject({ reason: 'INTERNAL', requestId: 'b3-4' });
    expect(stored('b3').map((r) => r.interval_start)).toEqual([T0, T0 + 4 * Q]);
    const alerts = f.ctx.store.db.prepare("SELECT count(*) AS n FROM alerts WHERE meter_id = 'b3'").get();
    expect(alerts).toEqual({ n: 2 }); // the failed reading's hook writes were rolled back
    expect(await send(2, 300, 100)).toMatchObject({ status: 'refused', reason: 'INTERNAL' }); // still failing
  });

  it('a full batch starts the next one; every reading is stored once', async () => {
    const { f, meter, stored } = ingestContext();
    const send = await meter('b4');
    const before = f.ctx.store.stats.writes;
    const results = await Promise.all(Array.from({ length: 1_500 }, (_, i) => send(i, 100 * (i + 1), 100)));
    expect(results.every((r) => r.status === 'accepted')).toBe(true);
    expect(f.ctx.store.stats.writes - before).toBe(2);
    const rows = stored('b4');
    expect(rows).toHaveLength(1_500);
    expect(rows.every((r) => r.effective_wh === 100)).toBe(true);
  });
});

describe('registry lookup cache', () => {
  it('sees its own changes at once and another connection’s from the next tick', async () => {
    const f = flowContext(T0, { durable: true });
    cleanups.push(() => f.close());
    const registry = f.ctx.registry;
    expect(registry.get('r1')).toBeUndefined();
    await registry.upsert([{ meterId: 'r1', supplierId: 's1', dnoId: 'd1', capacityW: 5_000, account: 'a' }]);
    expect(registry.get('r1')).toMatchObject({ capacityW: 5_000 });
    // `tre registry` on the same data directory: another SQLite connection.
    const cli = Store.openIn(f.ctx.store.path.replace(/\/tre\.sqlite$/, ''), { dataKey: testDataKey() });
    await new HouseholdRegistry(cli).upsert([
      { meterId: 'r1', supplierId: 's2', dnoId: 'd1', capacityW: 7_000, account: 'a' },
      { meterId: 'r2', supplierId: 's2', dnoId: 'd1', capacityW: 1_000, account: 'b' },
    ]);
    cli.close();
    await nextTick();
    expect(registry.get('r1')).toMatchObject({ supplierId: 's2', capacityW: 7_000 });
    expect(registry.get('r2')).toMatchObject({ capacityW: 1_000 });
  });

  it('stays bounded and answers like SQLite when it evicts', async () => {
    const store = new Store(':memory:');
    cleanups.push(() => store.close());
    const registry = new HouseholdRegistry(store, 3);
    await registry.upsert(
      Array.from({ length: 10 }, (_, i) => ({
        meterId: `m${i}`,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 1_000 + i,
        account: `a${i}`,
      })),
    );
    for (let round = 0; round < 3; round++)
      for (let i = 9; i >= 0; i--) expect(registry.get(`m${i}`)?.capacityW).toBe(1_000 + i);
    expect(registry.get('nobody')).toBeUndefined();
  });
});

describe('tariff price cache', () => {
  const tariff = (id: string, from: number, intervals: number, price: (i: number) => number): Tariff => ({
    v: 1,
    supplierId: 's1',
    tariffId: id,
    currency: 'GBP',
    validFrom: new Date(from).toISOString(),
    validTo: new Date(from + intervals * 30 * 60_000).toISOString(),
    intervalMinutes: 30,
    pricesPerMWh: Array.from({ length: intervals }, (_, i) => price(i)),
  });

  function book(maxCachedPrices?: number) {
    const store = new Store(':memory:');
    cleanups.push(() => store.close());
    return { store, tariffs: TariffBook.open(store, maxCachedPrices) };
  }

  it('prices every instant as the stored tariff does, across tariffs, with and without room to cache', async () => {
    for (const room of [undefined, 100]) {
      const { store, tariffs } = book(room);
      const a = tariff('a', T0, 48, (i) => 10_000 + i);
      const b = tariff('b', T0 + 2 * 86_400_000, 48, (i) => 20_000 + 7 * i);
      await store.commit(() => {
        tariffs.add(a, 'jws-a');
        tariffs.add(b, 'jws-b');
      });
      await nextTick();
      for (let round = 0; round < 2; round++)
        for (let t = T0 - Q; t < T0 + 3 * 86_400_000; t += Q) {
          const inA = t >= T0 && t < T0 + 86_400_000;
          const inB = t >= T0 + 2 * 86_400_000;
          const i = Math.floor(((t - T0) % (2 * 86_400_000)) / (30 * 60_000));
          const expected = inA ? 10_000 + i : inB ? 20_000 + 7 * i : undefined;
          expect(tariffs.priceAt('s1', t)?.price, new Date(t).toISOString()).toBe(expected);
          expect(tariffs.pricePerMWhAt('s1', t)).toBe(expected);
        }
      expect(tariffs.priceAt('s1', T0)).toEqual({ price: 10_000, currency: 'GBP' });
      expect(tariffs.priceAt('other', T0)).toBeUndefined();
    }
  });

  it('sees a tariff added after prices were cached', async () => {
    const { store, tariffs } = book();
    await store.commit(() =>
      tariffs.add(
        tariff('a', T0, 48, () => 10_000),
        'jws',
      ),
    );
    await nextTick();
    expect(tariffs.priceAt('s1', T0)?.price).toBe(10_000);
    expect(tariffs.priceAt('s1', T0 + 86_400_000)).toBeUndefined();
    await store.commit(() =>
      tariffs.add(
        tariff('b', T0 + 86_400_000, 48, () => 30_000),
        'jws',
      ),
    );
    expect(tariffs.priceAt('s1', T0 + 86_400_000)?.price).toBe(30_000);
    await nextTick();
    expect(tariffs.priceAt('s1', T0 + 86_400_000)?.price).toBe(30_000);
    expect(tariffs.priceAt('s1', T0)?.price).toBe(10_000);
  });

  it('never keeps a tariff whose transaction rolled back', async () => {
    const { store, tariffs } = book();
    const seen = await store
      .commit(() => {
        tariffs.add(
          tariff('a', T0, 48, () => 10_000),
          'jws',
        );
        const inside = tariffs.priceAt('s1', T0)?.price; // visible inside its own transaction
        throw Object.assign(new Error('rolled back'), { inside });
      })
      .catch((err: { inside?: number }) => err.inside);
    expect(seen).toBe(10_000);
    expect(tariffs.priceAt('s1', T0)).toBeUndefined();
    await nextTick();
    expect(tariffs.priceAt('s1', T0)).toBeUndefined();
    // The same id can be used again (nothing was stored), and its own prices apply.
    await store.commit(() =>
      tariffs.add(
        tariff('a', T0, 48, () => 12_000),
        'jws',
      ),
    );
    await nextTick();
    expect(tariffs.priceAt('s1', T0)?.price).toBe(12_000);
  });
});
