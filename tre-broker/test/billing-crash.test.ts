/**
 * kill -9 between reading commits and the statement: after a restart the totals are still exact and
 * each household's statement is issued once (re-sends carry the same statement id until acknowledged).
 * The TRE runs on an accelerated clock (7,200x: a one-day billing period takes 12 s).
 */
import { createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AcceleratedClock,
  decodePayload,
  type Statement,
  signContent,
  signedEnvelopeSchema,
  topics,
} from '@tre/protocol';
import { CertificateAuthority, HouseholdRegistry } from '@tre/tre-broker';
import { decodeJwt } from 'jose';
import type { MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { developmentStore } from './support/flow-context.js';
import { connectWith } from './support/tre-fixture.js';
import { spawnTre, type TreProcess } from './support/tre-process.js';

const SPEED = 7_200;
const Q = 900_000;
const PRICE = 250_000; // 25 p/kWh
let dir = '';
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('billing crash test', () => {
  it('totals exact and one statement per household after kill -9 mid-period', {
    timeout: 90_000,
  }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-billing-crash-'));
    const pki = join(dir, 'pki');
    const data = join(dir, 'data');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    const meters = ['c1', 'c2', 'c3', 'c4'];
    const files = Object.fromEntries(
      await Promise.all(meters.map(async (m) => [m, await ca.issue('meter', m)] as const)),
    );
    const supplierFiles = await ca.issue('supplier', 's1');
    const regulatorFiles = await ca.issue('regulator', 'r1');
    const store = await developmentStore(data);
    await new HouseholdRegistry(store).upsert(
      meters.map((m) => ({
        meterId: m,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 9_000,
        account: `acct-${m}`,
      })),
    );
    store.close();

    const epoch = Date.now();
    const clock = new AcceleratedClock(epoch, SPEED);
    const args = ['--clock-speed', String(SPEED), '--clock-epoch', String(epoch)];
    let tre: TreProcess = await spawnTre(pki, data, 0, args);
    const port = tre.port;
    const url = `mqtts://127.0.0.1:${port}`;
    // Aligned to the 30-minute tariff, and far enough ahead (1.5 s real) for the tariff to come before it: tariffs are future-only.
    const periodStart = Math.ceil((clock.now() + 3 * 3_600_000) / (2 * Q)) * 2 * Q;
    const periodEnd = periodStart + 86_400_000;

    const regulator = await connectWith(url, regulatorFiles);
    const cfg = await signContent(
      'regulatorConfig',
      { v: 1, minBillingPeriod: { unit: 'day', count: 1 }, issuedAt: new Date(clock.now()).toISOString() },
      createPrivateKey(await readFile(regulatorFiles.key)),
    );
    await regulator.publishAsync(
      topics.regulatorConfig('r1'),
      JSON.stringify({ v: 1, requestId: 'cfg', jws: cfg }),
      { qos: 1 },
    );
    regulator.end(true);
    let supplier = await connectWith(url, supplierFiles, { clientId: 's1', clean: false });
    const statements: Statement[] = [];
    const track = (c: MqttClient) =>
      c.on('message', (_t, p) => {
        const env = decodePayload(p, signedEnvelopeSchema);
        if (env.ok) statements.push(decodeJwt(env.value.jws) as unknown as Statement);
      });
    track(supplier);
    await supplier.subscribeAsync(topics.statement('s1'), { qos: 1 });
    await supplier.publishAsync(
      topics.billingPeriod('s1'),
      JSON.stringify({
        v: 1,
        requestId: 'bp',
        startsAt: new Date(periodStart).toISOString(),
        length: { unit: 'day', count: 1 },
      }),
      { qos: 1 },
    );
    const tariff = {
      v: 1,
      supplierId: 's1',
      tariffId: 'flat',
      currency: 'GBP',
      validFrom: new Date(periodStart).toISOString(),
      validTo: new Date(periodEnd).toISOString(),
      intervalMinutes: 30,
      pricesPerMWh: Array(48).fill(PRICE),
    };
    await supplier.publishAsync(
      topics.tariff('s1'),
      JSON.stringify({
        v: 1,
        requestId: 'tariff',
        jws: await signContent('tariff', tariff, createPrivateKey(await readFile(supplierFiles.key))),
      }),
      { qos: 1 },
    );

    // Meters publish each interval once it has ended; the acknowledged ones are what must be billed.
    const acked = new Map<string, number>(); // `${meter}@${i}` -> Wh
    const energy = (m: number, i: number) => 50 + ((m * 37 + i * 11) % 400);
    let sentUpTo = 0;
    const publishEnded = async () => {
      const clients = await Promise.all(meters.map((m) => connectWith(url, files[m]!)));
      // The last 6 intervals are never sent (a gap), so nothing can race the period-end statement.
      const ended = Math.min(90, Math.floor((clock.now() - periodStart) / Q));
      for (let i = Math.max(0, sentUpTo - 2); i < ended; i++) {
        await Promise.all(
          clients.map(async (c, m) => {
            let reg = 10_000;
            for (let k = 0; k <= i; k++) reg += energy(m, k);
            const body = {
              v: 1,
              requestId: `${m}-${i}`,
              intervalStart: new Date(periodStart + i * Q).toISOString(),
              intervalMinutes: 15,
              energyWh: energy(m, i),
              registerWh: reg,
            };
            await c.publishAsync(topics.reading(meters[m]!), JSON.stringify(body), { qos: 1 });
            acked.set(`${m}@${i}`, energy(m, i));
          }),
        ).catch(() => {});
      }
      sentUpTo = Math.max(sentUpTo, ended);
      for (const c of clients) c.end(true);
    };
    while (clock.now() < periodStart + 10 * 3_600_000) {
      await new Promise((r) => setTimeout(r, 300));
      await publishEnded();
    }
    await tre.kill9(); // between reading commits and the statement
    supplier.end(true);
    tre = await spawnTre(pki, data, port, args);
    supplier = await connectWith(url, supplierFiles, { clientId: 's1', clean: false });
    track(supplier);
    await supplier.subscribeAsync(topics.statement('s1'), { qos: 1 });
    while (clock.now() < periodEnd) {
      await new Promise((r) => setTimeout(r, 300));
      await publishEnded();
    }
    const deadline = Date.now() + 15_000;
    while (new Set(statements.map((s) => s.account)).size < meters.length && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    supplier.end(true);
    expect(await tre.stop()).toBe(0);

    const ids = new Map<string, Set<string>>();
    for (const s of statements) ids.set(s.account, (ids.get(s.account) ?? new Set()).add(s.statementId));
    console.log(
      `billing crash test: ${acked.size} readings acknowledged, ${statements.length} statement messages, ${ids.size} accounts`,
    );
    expect(ids.size).toBe(meters.length);
    for (const [m, meter] of meters.entries()) {
      expect(ids.get(`acct-${meter}`)?.size).toBe(1); // issued once
      let wh = 0;
      for (const [key, e] of acked) if (key.startsWith(`${m}@`)) wh += e;
      const st = statements.find((s) => s.account === `acct-${meter}`)!;
      expect(st.totalMinor).toBe(Math.round((wh * PRICE) / 1e6)); // never a .5 case: wh * 0.25 has quarter steps, checked below
      expect(((wh * PRICE) % 1_000_000) * 2).not.toBe(1_000_000);
      expect(st).toMatchObject({ basis: 'estimated' }); // 6 intervals never sent (the supplier sees no count)
    }
  });
});
