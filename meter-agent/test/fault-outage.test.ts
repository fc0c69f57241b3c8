/**
 * Fault: the TRE stops for a minute under load. Twenty agents keep reading (one interval per real
 * second on a 900x clock) into their on-disk outboxes, drain after the restart, and every interval
 * is stored and billed exactly once. Loopback only, bounded (~90 s).
 */
import { createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AcceleratedClock, signContent, topics } from '@tre/protocol';
import { CertificateAuthority, registerHouseholds } from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';
import { developmentStore } from '../../tre-broker/test/support/flow-context.js';
import { connectWith } from '../../tre-broker/test/support/tre-fixture.js';
import { spawnTre } from '../../tre-broker/test/support/tre-process.js';
import { Outbox } from '../src/outbox.js';
import { TreLink, trustWithoutAttestation } from '../src/tre-link.js';

const SPEED = 900; // one 15-minute interval per real second
const AGENTS = 20;
const PRICE = 200_000;
let dir = '';
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('TRE outage under load', () => {
  it('agents queue for a minute and drain: no loss, no double billing', { timeout: 180_000 }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-outage-'));
    const pki = join(dir, 'pki');
    const data = join(dir, 'data');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    const meters = Array.from({ length: AGENTS }, (_, i) => `o${i}`);
    const files = await Promise.all(meters.map((m) => ca.issue('meter', m)));
    await registerHouseholds(
      data,

      meters.map((m) => ({ meterId: m, supplierId: 's1', dnoId: 'd1', capacityW: 9_000, account: `a-${m}` })),
    );
    const epoch = Date.now();
    const clock = new AcceleratedClock(epoch, SPEED);
    const args = ['--clock-speed', String(SPEED), '--clock-epoch', String(epoch)];
    let tre = await spawnTre(pki, data, 0, args);
    const url = `mqtts://127.0.0.1:${tre.port}`;
    const Q = 900_000;
    // At least an hour (4 s real) ahead: the tariff must reach the TRE before it (tariffs are future-only).
    const start = Math.ceil((clock.now() + 4 * Q) / (2 * Q)) * 2 * Q;

    // Regulator and supplier: daily periods allowed, a flat tariff from `start`.
    const reg = await ca.issue('regulator', 'r1');
    const regulator = await connectWith(url, reg);
    const cfg = await signContent(
      'regulatorConfig',
      { v: 1, minBillingPeriod: { unit: 'day', count: 1 }, issuedAt: new Date(clock.now()).toISOString() },
      createPrivateKey(await readFile(reg.key)),
    );
    await regulator.publishAsync(
      topics.regulatorConfig('r1'),
      JSON.stringify({ v: 1, requestId: 'cfg', jws: cfg }),
      { qos: 1 },
    );
    regulator.end(true);
    const sup = await ca.issue('supplier', 's1');
    const supplier = await connectWith(url, sup);
    await supplier.publishAsync(
      topics.billingPeriod('s1'),
      JSON.stringify({
        v: 1,
        requestId: 'bp',
        startsAt: new Date(start).toISOString(),
        length: { unit: 'day', count: 1 },
      }),
      { qos: 1 },
    );
    const tariff = {
      v: 1,
      supplierId: 's1',
      tariffId: 'flat',
      currency: 'GBP',
      validFrom: new Date(start).toISOString(),
      validTo: new Date(start + 2 * 86_400_000).toISOString(),
      intervalMinutes: 30,
      pricesPerMWh: Array(96).fill(PRICE),
    };
    await supplier.publishAsync(
      topics.tariff('s1'),
      JSON.stringify({
        v: 1,
        requestId: 't',
        jws: await signContent('tariff', tariff, createPrivateKey(await readFile(sup.key))),
      }),
      { qos: 1 },
    );
    supplier.end(true);

    const links = await Promise.all(
      meters.map(async (m, i) => {
        const f = files[i]!;
        const link = new TreLink({
          meterId: m,
          endpoints: [`mqtts://127.0.0.1:${tre.port}`],
          tls: { key: await readFile(f.key), cert: await readFile(f.cert), ca: await readFile(f.ca) },
          outbox: new Outbox(join(dir, 'agents', m, 'outbox.jsonl')),
          clock,
          attestor: trustWithoutAttestation,
          backoff: { baseMs: (2_000 * SPEED) / 1000, maxMs: (4_000 * SPEED) / 1000 }, // 2-4 s real
          receiptTimeoutMs: 10 * 60_000,
        });
        link.start();
        return link;
      }),
    );
    const sent = new Map<string, number>(); // meter@interval -> Wh
    const registers = meters.map(() => 50_000);
    let next = 0;
    const readUpTo = () => {
      const ended = Math.floor((clock.now() - start) / Q);
      for (; next < ended; next++) {
        meters.forEach((m, i) => {
          const wh = 100 + ((i * 13 + next * 7) % 300);
          registers[i]! += wh;
          sent.set(`${m}@${next}`, wh);
          links[i]!.enqueue(`reading:${next}`, topics.reading(m), {
            v: 1,
            intervalStart: new Date(start + next * Q).toISOString(),
            intervalMinutes: 15,
            energyWh: wh,
            registerWh: registers[i],
          });
        });
      }
    };
    const tick = async (ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        readUpTo();
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    while (clock.now() < start) await new Promise((r) => setTimeout(r, 50));
    await tick(8_000);
    await tre.stop(); // the TRE is down for a minute; the agents keep reading
    const queuedBefore = links.reduce((a, l) => a + l.outboxDepth, 0);
    await tick(60_000);
    const queued = links.reduce((a, l) => a + l.outboxDepth, 0);
    tre = await spawnTre(pki, data, Number(new URL(url).port), args);
    const drainStart = Date.now();
    while (links.some((l) => l.outboxDepth > 0) && Date.now() - drainStart < 60_000) {
      readUpTo();
      await new Promise((r) => setTimeout(r, 100));
    }
    const drainSeconds = (Date.now() - drainStart) / 1000;
    await Promise.all(links.map((l) => l.stop()));
    expect(await tre.stop()).toBe(0);

    const after = await developmentStore(data);
    const rows = after.db.prepare('SELECT meter_id, interval_start, effective_wh FROM readings').all() as {
      meter_id: string;
      interval_start: number;
      effective_wh: number;
    }[];
    const lines = after.db
      .prepare("SELECT meter_id, interval_start, amount_micro FROM ledger WHERE kind = 'energy'")
      .all() as { meter_id: string; interval_start: number; amount_micro: number }[];
    after.close();
    console.log(
      `outage: ${sent.size} intervals read, ${queued - queuedBefore} queued during the 60 s outage, drained in ${drainSeconds.toFixed(1)} s; ${rows.length} stored, ${lines.length} billed`,
    );
    expect(queued).toBeGreaterThan(AGENTS * 40);
    expect(rows).toHaveLength(sent.size);
    for (const r of rows)
      expect(r.effective_wh).toBe(sent.get(`${r.meter_id}@${(r.interval_start - start) / Q}`));
    expect(lines).toHaveLength(sent.size); // billed once each
    const expected = [...sent.values()].reduce((a, wh) => a + wh * PRICE, 0);
    expect(lines.reduce((a, l) => a + l.amount_micro, 0)).toBe(expected);
  });
});
