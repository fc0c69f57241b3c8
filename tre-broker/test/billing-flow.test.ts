/**
 * Billing through real mTLS clients on a simulated clock: a supplier's tariff is re-signed by the
 * TRE and the household's verifier accepts that copy and rejects a tampered one; at period end the
 * supplier gets one statement per household and nothing else; too-short periods are refused.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  ManualClock,
  PROTOCOL_VERSION,
  type Receipt,
  regulatorConfigSchema,
  type Statement,
  signContent,
  statementSchema,
  type Tariff,
  tariffSchema,
  topics,
  verifyContent,
} from '@tre/protocol';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextMessage, startTreFixture, subscribeOutcome, type TreFixture } from './support/tre-fixture.js';

const T0 = Date.UTC(2026, 5, 1);
const clock = new ManualClock(T0 - 3_600_000);
let fx: TreFixture;
let supplier: MqttClient;
let supplierKey: ReturnType<typeof createPrivateKey>;
let treCert: X509Certificate;
const supplierGot: { topic: string; payload: string }[] = [];

async function request(
  client: MqttClient,
  role: 'supplier' | 'regulator',
  id: string,
  topic: string,
  body: unknown,
): Promise<Receipt> {
  const receipt = nextMessage(client, `tre/v1/${role}/${id}/inbox/receipt`);
  await client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  return JSON.parse((await receipt).payload.toString()) as Receipt;
}

beforeAll(async () => {
  fx = await startTreFixture({ clock });
  const files = await fx.issue('supplier', 's1');
  supplierKey = createPrivateKey(await readFile(files.key));
  treCert = new X509Certificate(await readFile(`${fx.treDir}/tre.crt`));
  for (const m of ['b1', 'b2', 'b3']) await fx.issue('meter', m, undefined, { supplierId: 's1' });
  supplier = await fx.connect('supplier', 's1');
  supplier.on('message', (topic, payload) => supplierGot.push({ topic, payload: payload.toString() }));
  // Everything a supplier may subscribe to; anything else is refused.
  await supplier.subscribeAsync(['tre/v1/supplier/s1/statement', 'tre/v1/supplier/s1/inbox/+'], { qos: 1 });
});
afterAll(async () => fx?.close());

describe('billing flow', () => {
  it('a supplier subscribing to anything but its own statements and inbox is refused', async () => {
    for (const f of [
      'tre/v1/meter/+/reading',
      'tre/v1/supplier/s2/statement',
      'tre/v1/meter/b1/inbox/+',
      'tre/v1/dno/d1/aggregate/+',
    ]) {
      expect(await subscribeOutcome(supplier, f)).toBe(128);
    }
  });

  it('refuses a period shorter than the regulator minimum, accepts one at least as long', async () => {
    const regulatorFiles = await fx.issue('regulator', 'r1');
    const regulator = await fx.connect('regulator', 'r1');
    const config = {
      v: PROTOCOL_VERSION,
      minBillingPeriod: { unit: 'day', count: 1 },
      issuedAt: new Date(T0).toISOString(),
    };
    const jws = await signContent(
      'regulatorConfig',
      regulatorConfigSchema.parse(config),
      createPrivateKey(await readFile(regulatorFiles.key)),
    );
    expect(
      await request(regulator, 'regulator', 'r1', topics.regulatorConfig('r1'), {
        v: 1,
        requestId: 'cfg',
        jws,
      }),
    ).toMatchObject({ status: 'accepted' });
    expect(
      await request(supplier, 'supplier', 's1', topics.billingPeriod('s1'), {
        v: 1,
        requestId: 'p0',
        startsAt: new Date(T0).toISOString(),
        length: { unit: 'day', count: 0 },
      }),
    ).toMatchObject({ reason: 'MALFORMED' });
    const short = await request(regulator, 'regulator', 'r1', topics.regulatorConfig('r1'), {
      v: 1,
      requestId: 'cfg2',
      jws: await signContent(
        'regulatorConfig',
        { ...config, minBillingPeriod: { unit: 'day', count: 7 }, issuedAt: new Date(T0 + 1).toISOString() },
        createPrivateKey(await readFile(regulatorFiles.key)),
      ),
    });
    expect(short.status).toBe('accepted');
    expect(
      await request(supplier, 'supplier', 's1', topics.billingPeriod('s1'), {
        v: 1,
        requestId: 'p1',
        startsAt: new Date(T0).toISOString(),
        length: { unit: 'day', count: 1 },
      }),
    ).toMatchObject({ status: 'refused', reason: 'PERIOD_TOO_SHORT' });
    // Configurations are ordered by issuedAt: the first one again is a replay; a newer one is accepted.
    expect(
      await request(regulator, 'regulator', 'r1', topics.regulatorConfig('r1'), {
        v: 1,
        requestId: 'cfg3',
        jws,
      }),
    ).toMatchObject({ status: 'refused', reason: 'REPLAYED' });
    await request(regulator, 'regulator', 'r1', topics.regulatorConfig('r1'), {
      v: 1,
      requestId: 'cfg4',
      jws: await signContent(
        'regulatorConfig',
        { ...config, issuedAt: new Date(T0 + 2).toISOString() },
        createPrivateKey(await readFile(regulatorFiles.key)),
      ),
    });
    expect(
      await request(supplier, 'supplier', 's1', topics.billingPeriod('s1'), {
        v: 1,
        requestId: 'p2',
        startsAt: new Date(T0).toISOString(),
        length: { unit: 'day', count: 1 },
      }),
    ).toMatchObject({ status: 'accepted' });
  });

  it('re-signs the tariff; the household verifier accepts the TRE copy and rejects a tampered one', async () => {
    const tariff: Tariff = {
      v: 1,
      supplierId: 's1',
      tariffId: 'tou',
      currency: 'GBP',
      validFrom: new Date(T0).toISOString(),
      validTo: new Date(T0 + 86_400_000).toISOString(),
      intervalMinutes: 30,
      pricesPerMWh: Array.from({ length: 48 }, (_, i) => (i >= 34 && i < 40 ? 350_000 : 240_000)),
    };
    const meter = await fx.connect('meter', 'b1');
    const broadcast = nextMessage(meter, 'tre/v1/broadcast/tariff/+');
    const forged = await signContent(
      'tariff',
      { ...tariff, tariffId: 'forged' },
      createPrivateKey(
        (await import('node:crypto'))
          .generateKeyPairSync('ec', { namedCurve: 'P-256' })
          .privateKey.export({ type: 'pkcs8', format: 'pem' }),
      ),
    );
    expect(
      await request(supplier, 'supplier', 's1', topics.tariff('s1'), { v: 1, requestId: 'bad', jws: forged }),
    ).toMatchObject({ status: 'refused', reason: 'BAD_SIGNATURE' });
    expect(
      await request(supplier, 'supplier', 's1', topics.tariff('s1'), {
        v: 1,
        requestId: 'other',
        jws: await signContent('tariff', { ...tariff, supplierId: 's2' }, supplierKey),
      }),
    ).toMatchObject({ reason: 'WRONG_SIGNER' });
    expect(
      await request(supplier, 'supplier', 's1', topics.tariff('s1'), {
        v: 1,
        requestId: 'old',
        jws: await signContent(
          'tariff',
          {
            ...tariff,
            validFrom: new Date(T0 - 86_400_000).toISOString(),
            pricesPerMWh: [...tariff.pricesPerMWh, ...tariff.pricesPerMWh],
          },
          supplierKey,
        ),
      }),
    ).toMatchObject({ reason: 'TARIFF_RETROACTIVE' });
    expect(
      await request(supplier, 'supplier', 's1', topics.tariff('s1'), {
        v: 1,
        requestId: 't1',
        jws: await signContent('tariff', tariff, supplierKey),
      }),
    ).toMatchObject({ status: 'accepted' });
    expect(
      await request(supplier, 'supplier', 's1', topics.tariff('s1'), {
        v: 1,
        requestId: 't2',
        jws: await signContent('tariff', { ...tariff, tariffId: 'again' }, supplierKey),
      }),
    ).toMatchObject({ reason: 'TARIFF_OVERLAP' });
    const copy = JSON.parse((await broadcast).payload.toString()) as { jws: string };
    await expect(verifyContent('tariff', copy.jws, treCert.publicKey, tariffSchema)).resolves.toEqual(tariff);
    const [h, p, sig] = copy.jws.split('.');
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...tariff, pricesPerMWh: tariff.pricesPerMWh.map(() => 1) })).toString('base64url')}.${sig}`;
    await expect(verifyContent('tariff', tampered, treCert.publicKey, tariffSchema)).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
    expect(p).toBeTruthy();
  });

  it('at period end the supplier receives one signed statement per household and nothing finer', async () => {
    clock.advance(T0 + 2 * 3_600_000 - clock.now());
    const energies = { b1: [120, 80, 200, 50], b2: [10, 10, 10, 10], b3: [] as number[] };
    for (const [m, list] of Object.entries(energies)) {
      const c = await fx.connect('meter', m);
      let reg = 5_000;
      for (const [i, e] of list.entries()) {
        reg += e;
        await c.publishAsync(
          topics.reading(m),
          JSON.stringify({
            v: 1,
            requestId: `${m}-${i}`,
            intervalStart: new Date(T0 + i * 900_000).toISOString(),
            intervalMinutes: 15,
            energyWh: e,
            registerWh: reg,
          }),
          { qos: 1 },
        );
      }
    }
    const before = supplierGot.length;
    clock.advance(T0 + 86_400_000 + 3_600_000 - clock.now()); // period end + the grace hour for late readings
    for (let i = 0; i < 100 && supplierGot.filter((g) => g.topic.endsWith('/statement')).length < 3; i++)
      await new Promise((r) => setTimeout(r, 20));
    const got = supplierGot.slice(before);
    const statements = got.filter((g) => g.topic === topics.statement('s1'));
    expect(statements).toHaveLength(3);
    const decoded = await Promise.all(
      statements.map((s) =>
        verifyContent(
          'statement',
          (JSON.parse(s.payload) as { jws: string }).jws,
          treCert.publicKey,
          statementSchema,
        ),
      ),
    );
    const byAccount = Object.fromEntries(decoded.map((s: Statement) => [s.account, s]));
    // 120+80 Wh at 240,000/MWh (first half hour), 200+50 Wh at 240,000: 450 Wh x 0.24 = 108 minor units
    // Whether the period was fully read, nothing finer (the counts are in the household's own copy).
    expect(byAccount['acc-b1']).toEqual(
      expect.objectContaining({ totalMinor: 108, basis: 'estimated', currency: 'GBP' }),
    );
    expect(byAccount['acc-b1']).not.toHaveProperty('intervalsMissing');
    expect(byAccount['acc-b2']).toMatchObject({ totalMinor: 10, basis: 'estimated' });
    expect(byAccount['acc-b3']).toMatchObject({ totalMinor: 0, basis: 'estimated' });
    expect(
      got.every((g) => g.topic === topics.statement('s1') || g.topic.startsWith('tre/v1/supplier/s1/inbox/')),
    ).toBe(true);
    expect(got.map((g) => g.payload).join()).not.toMatch(/"(energyWh|registerWh|intervalStart|meterId)"/);
    // Acknowledged statements are not re-sent.
    expect(
      await request(supplier, 'supplier', 's1', topics.statementAck('s1'), {
        v: 1,
        requestId: 'ack',
        statementIds: decoded.map((s) => s.statementId),
      }),
    ).toMatchObject({ message: '3 statements acknowledged' });
    expect(await fx.tre.billing.resendUnacked()).toBe(0);
  });
});
