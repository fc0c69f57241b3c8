/**
 * The supplier-side attacks of issue 16, each through the TRE's real flows (no network): every one
 * of these passed on the code before anchored periods, tariff rules, future-only tariffs, the
 * count-free statement and issuedAt ordering.
 */
import {
  type HouseholdStatement,
  type PeriodLength,
  PROTOCOL_VERSION,
  type Statement,
  signContent,
  type Tariff,
  topics,
} from '@tre/protocol';
import { decodeJwt } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { flowContext } from './support/flow-context.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const Q = 900_000;
const T0 = Date.UTC(2026, 4, 4);
const day = { unit: 'day' as const, count: 1 };

let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
  close = undefined;
});

const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 20));
};

async function setUp(meters: string[], minPeriod: PeriodLength = day) {
  const f = flowContext(T0 - HOUR);
  const flows = f.flows({ billing: { minPeriod } });
  close = async () => {
    await flows.stop();
    f.close();
  };
  await f.ctx.registry.upsert(
    meters.map((m) => ({ meterId: m, supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: `a-${m}` })),
  );
  const supplier = f.party({ role: 'supplier', id: 's1' });
  const tariffMsg = async (t: Partial<Tariff> & { pricesPerMWh: number[] }, requestId = 'tariff') => ({
    v: PROTOCOL_VERSION,
    requestId,
    jws: await signContent(
      'tariff',
      {
        v: 1,
        supplierId: 's1',
        tariffId: requestId,
        currency: 'GBP',
        validFrom: new Date(T0).toISOString(),
        validTo: new Date(T0 + (t.pricesPerMWh.length * DAY) / 48).toISOString(),
        intervalMinutes: 30,
        ...t,
      } satisfies Tariff,
      supplier.privateKey,
    ),
  });
  const period = (startsAt: number, requestId = 'bp') =>
    supplier.send(topics.billingPeriod('s1'), {
      v: 1,
      requestId,
      startsAt: new Date(startsAt).toISOString(),
      length: day,
    });
  const regs = new Map<string, number>();
  /** Sends the meter's reading of [start, start + minutes) (advance the clock past it first). */
  const reading = (meter: string, start: number, wh: number, minutes: 15 | 30 = 15) => {
    const reg = (regs.get(meter) ?? 1_000) + wh;
    regs.set(meter, reg);
    return f.party({ role: 'meter', id: meter }).send(topics.reading(meter), {
      v: 1,
      requestId: `${meter}-${start}`,
      intervalStart: new Date(start).toISOString(),
      intervalMinutes: minutes,
      energyWh: wh,
      registerWh: reg,
    });
  };
  /** Distinct statements (unacknowledged ones are re-sent every 10 minutes). */
  const supplierStatements = () => [
    ...new Map(
      f.published
        .filter((p) => p.topic === topics.statement('s1'))
        .map((p) => decodeJwt(JSON.parse(p.payload).jws) as unknown as Statement)
        .map((st) => [st.statementId, st]),
    ).values(),
  ];
  const householdStatements = (meter: string) =>
    f.published
      .filter((p) => p.topic === `tre/v1/meter/${meter}/inbox/statement`)
      .map((p) => decodeJwt(JSON.parse(p.payload).jws) as unknown as HouseholdStatement);
  return { f, flows, supplier, tariffMsg, period, reading, supplierStatements, householdStatements };
}

describe('billing privacy against an honest-but-curious supplier', () => {
  it('re-anchoring: a legal-length period starting just under one period ago yields no short statement', async () => {
    const s = await setUp(['h1']);
    expect(await s.period(T0)).toMatchObject({ status: 'accepted' });
    expect(
      await s.supplier.send(
        topics.tariff('s1'),
        await s.tariffMsg({ pricesPerMWh: Array(144).fill(200_000) }),
      ),
    ).toMatchObject({ status: 'accepted' });
    const sendUpTo = async (until: number, from: number) => {
      for (let t = from; t + Q <= until; t += Q) {
        s.f.clock.advance(Math.max(0, t + Q - s.f.clock.now()));
        await s.reading('h1', t, 100 + ((t / Q) % 7));
      }
    };
    await sendUpTo(T0 + DAY + 5 * HOUR, T0);
    await settle();
    expect(s.supplierStatements()).toHaveLength(1); // [T0, T0 + 1 day), issued a grace hour after
    // The attack, twice: each time a period whose end falls a few minutes from now.
    for (const k of [0, 1]) {
      const now = s.f.clock.now();
      expect(await s.period(now - DAY - HOUR + 10 * 60_000, `attack-${k}`)).toMatchObject({
        status: 'accepted',
      });
      s.f.clock.advance(11 * 60_000);
      await settle();
      await sendUpTo(now + 30 * 60_000, now - Q);
    }
    s.f.clock.advance(T0 + 2 * DAY + HOUR + 1 - s.f.clock.now());
    await settle();
    const spans = s.supplierStatements().map((st) => [Date.parse(st.periodStart), Date.parse(st.periodEnd)]);
    expect(spans).toEqual([
      [T0, T0 + DAY],
      [T0 + DAY, T0 + 2 * DAY],
    ]);
  });

  it('probe tariffs: zero everywhere but one interval, or one interval 50x the rest, are refused naming the rule', async () => {
    const s = await setUp(['h1']);
    const zero = Array.from({ length: 48 }, (_, i) => (i === 37 ? 240_000 : 0));
    expect(
      await s.supplier.send(topics.tariff('s1'), await s.tariffMsg({ pricesPerMWh: zero }, 'probe-0')),
    ).toMatchObject({
      status: 'refused',
      reason: 'TARIFF_BELOW_FLOOR',
    });
    const spike = Array.from({ length: 48 }, (_, i) => (i === 37 ? 50 * 200_000 : 200_000));
    expect(
      await s.supplier.send(topics.tariff('s1'), await s.tariffMsg({ pricesPerMWh: spike }, 'probe-50')),
    ).toMatchObject({
      status: 'refused',
      reason: 'TARIFF_PRICE_RATIO',
    });
  });

  it('presence: the supplier statement carries no interval counts; the household copy counts minutes of any reading length', async () => {
    const s = await setUp(['h15', 'h30', 'gap']);
    await s.period(T0);
    await s.supplier.send(topics.tariff('s1'), await s.tariffMsg({ pricesPerMWh: Array(48).fill(200_000) }));
    s.f.clock.advance(T0 + DAY + 60_000 - s.f.clock.now());
    for (let t = T0; t < T0 + DAY; t += Q) {
      await s.reading('h15', t, 10);
      if ((t - T0) % (2 * Q) === 0) await s.reading('h30', t, 20, 30);
      if (t !== T0 + 10 * Q) await s.reading('gap', t, 10);
    }
    await s.flows.billing.closePeriod('s1', T0, T0 + DAY);
    const statements = s.supplierStatements();
    expect(statements).toHaveLength(3);
    for (const st of statements)
      expect(Object.keys(st).sort()).toEqual([
        'account',
        'basis',
        'currency',
        'periodEnd',
        'periodStart',
        'statementId',
        'supplierId',
        'totalMinor',
        'v',
      ]);
    const byAccount = Object.fromEntries(statements.map((st) => [st.account, st]));
    expect(byAccount['a-h15']).toMatchObject({ basis: 'complete', totalMinor: 192 });
    expect(byAccount['a-h30']).toMatchObject({ basis: 'complete', totalMinor: 192 });
    expect(byAccount['a-gap']).toMatchObject({ basis: 'estimated', totalMinor: 190 });
    expect(s.householdStatements('h30')[0]).toMatchObject({
      readingsBilled: 48,
      minutesMissing: 0,
      basis: 'complete',
    });
    expect(s.householdStatements('gap')[0]).toMatchObject({ readingsBilled: 95, minutesMissing: 15 });
  });

  it('retroactive tariff: one covering readings already received is refused, and no receipt counts readings', async () => {
    const s = await setUp(['h1', 'h2']);
    await s.period(T0);
    s.f.clock.advance(T0 + 5 * HOUR - s.f.clock.now());
    for (let t = T0; t < T0 + 4 * HOUR; t += Q) {
      await s.reading('h1', t, 50);
      await s.reading('h2', t, 70);
    }
    const late = await s.supplier.send(
      topics.tariff('s1'),
      await s.tariffMsg({ pricesPerMWh: Array(48).fill(200_000) }, 'late'),
    );
    expect(late).toMatchObject({ status: 'refused', reason: 'TARIFF_RETROACTIVE' });
    expect(late.message).not.toMatch(/\d+ (waiting|readings)/);
    const next = T0 + 5 * HOUR + 30 * 60_000;
    const ahead = await s.supplier.send(
      topics.tariff('s1'),
      await s.tariffMsg(
        {
          validFrom: new Date(next).toISOString(),
          validTo: new Date(next + DAY).toISOString(),
          pricesPerMWh: Array(48).fill(200_000),
        },
        'ahead',
      ),
    );
    expect(ahead).toMatchObject({ status: 'accepted', requestId: 'ahead', message: 'tariff stored' });
    await s.flows.billing.closePeriod('s1', T0, T0 + DAY);
    expect(s.supplierStatements().map((st) => st.totalMinor)).toEqual([0, 0]); // the readings before it are never priced
  });

  it('replays: an older signed regulator configuration or registry update is refused', async () => {
    const s = await setUp(['h1'], { unit: 'month', count: 1 });
    const regulator = s.f.party({ role: 'regulator', id: 'r1' });
    const config = (issuedAt: number, count: number) =>
      signContent(
        'regulatorConfig',
        { v: 1, minBillingPeriod: { unit: 'day', count }, issuedAt: new Date(issuedAt).toISOString() },
        regulator.privateKey,
      );
    const send = async (topic: string, requestId: string, jws: Promise<string>) =>
      regulator.send(topic, { v: 1, requestId, jws: await jws });
    expect(await send(topics.regulatorConfig('r1'), 'c7', config(T0 - HOUR, 7))).toMatchObject({
      status: 'accepted',
    });
    const replay = await send(topics.regulatorConfig('r1'), 'c1', config(T0 - 2 * HOUR, 1));
    expect(replay).toMatchObject({ status: 'refused', reason: 'REPLAYED' });
    expect(await s.period(T0)).toMatchObject({ status: 'refused', reason: 'PERIOD_TOO_SHORT' });
    expect(await send(topics.regulatorConfig('r1'), 'c1b', config(T0 - HOUR + 1, 1))).toMatchObject({
      status: 'accepted',
    });
    expect(await s.period(T0)).toMatchObject({ status: 'accepted' });

    s.f.ctx.registry.serve(s.f.ctx.router); // as tre.ts does
    const registry = (issuedAt: number, capacityW: number) =>
      signContent(
        'registryUpdate',
        {
          v: 1,
          households: [{ meterId: 'h9', supplierId: 's1', dnoId: 'd1', capacityW, account: 'a-h9' }],
          issuedAt: new Date(issuedAt).toISOString(),
        },
        regulator.privateKey,
      );
    const first = await send(topics.registry('r1'), 'r2', registry(T0, 5_000));
    expect(first, first.message).toMatchObject({
      status: 'accepted',
    });
    expect(await send(topics.registry('r1'), 'r1', registry(T0 - 1, 9_000))).toMatchObject({
      status: 'refused',
      reason: 'REPLAYED',
    });
    expect(await send(topics.registry('r1'), 'r2', registry(T0, 9_000))).toMatchObject({
      reason: 'REPLAYED',
    });
    expect(s.f.ctx.registry.get('h9')?.capacityW).toBe(5_000);
    expect(
      await regulator.send(topics.registry('r1'), {
        v: 1,
        requestId: 'unsigned',
        households: [{ meterId: 'h9', supplierId: 's1', dnoId: 'd1', capacityW: 1, account: 'a-h9' }],
      }),
    ).toMatchObject({ status: 'refused', reason: 'MALFORMED' });
  });
});
