/**
 * kill -9 the TRE while meters publish QoS1 readings: after restart every acknowledged reading is
 * in the store (a PUBACK without a refusal receipt before it means accepted and committed).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, HouseholdRegistry } from '@tre/tre-broker';
import type { MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { developmentStore } from './support/flow-context.js';
import { connectWith } from './support/tre-fixture.js';
import { spawnTre } from './support/tre-process.js';

const METERS = 20;
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('crash durability', () => {
  it('loses no acknowledged reading when the TRE is killed with SIGKILL under load', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-crash-'));
    dirs.push(dir);
    const pki = join(dir, 'pki');
    const data = join(dir, 'data');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    const files = [];
    const store = await developmentStore(data);
    const registry = new HouseholdRegistry(store);
    for (let m = 0; m < METERS; m++) {
      files.push(await ca.issue('meter', `k${m}`));
      await registry.upsert([
        { meterId: `k${m}`, supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: `a${m}` },
      ]);
    }
    store.close();

    const tre = await spawnTre(pki, data);
    const url = `mqtts://127.0.0.1:${tre.port}`;
    const clients: MqttClient[] = await Promise.all(files.map((f) => connectWith(url, f)));
    // Refusals are receipts written before the PUBACK: a PUBACK after one is not an acceptance.
    const refused = new Set<string>();
    await Promise.all(
      clients.map((c, m) => {
        c.on('message', (_t, p) => {
          const r = JSON.parse(p.toString()) as { status: string; requestId: string };
          if (r.status === 'refused') refused.add(r.requestId);
        });
        return c.subscribeAsync(`tre/v1/meter/k${m}/inbox/receipt`, { qos: 1 });
      }),
    );
    const acked: { meter: string; start: number }[] = [];
    const base = Date.UTC(2026, 0, 1);
    let killed = false;
    const publishers = clients.map(async (c, m) => {
      for (let i = 0; !killed; i++) {
        const start = base + i * 900_000;
        const body = {
          v: 1,
          requestId: `k${m}-${i}`,
          intervalStart: new Date(start).toISOString(),
          intervalMinutes: 15,
          energyWh: 100,
          registerWh: 100 * (i + 1),
        };
        try {
          await c.publishAsync(`tre/v1/meter/k${m}/reading`, JSON.stringify(body), { qos: 1 });
          if (!killed && !refused.has(body.requestId)) acked.push({ meter: `k${m}`, start });
        } catch {
          return;
        }
      }
    });
    while (acked.length < 400) await new Promise((r) => setTimeout(r, 10));
    await tre.kill9();
    const ackedAtKill = acked.length;
    killed = true;
    for (const c of clients) c.end(true);
    await Promise.allSettled(publishers);

    const after = await developmentStore(data);
    const has = after.db.prepare('SELECT 1 FROM readings WHERE meter_id = ? AND interval_start = ?');
    const lost = acked.slice(0, ackedAtKill).filter((a) => !has.get(a.meter, a.start));
    const total = (after.db.prepare('SELECT count(*) AS n FROM readings').get() as { n: number }).n;
    after.close();
    console.log(
      `crash test: ${ackedAtKill} readings acknowledged before SIGKILL, ${total} stored, ${lost.length} lost`,
    );
    expect(ackedAtKill).toBeGreaterThanOrEqual(400);
    expect(refused.size).toBe(0);
    expect(lost).toEqual([]);

    // The TRE restarts on the same data and acknowledges a resend (a duplicate) with its PUBACK alone.
    const again = await spawnTre(pki, data);
    const c = await connectWith(`mqtts://127.0.0.1:${again.port}`, files[0]!);
    const receipts: string[] = [];
    c.on('message', (_t, p) => receipts.push(p.toString()));
    await c.subscribeAsync('tre/v1/meter/k0/inbox/receipt', { qos: 1 });
    const first = {
      v: 1,
      requestId: 'resend',
      intervalStart: new Date(base).toISOString(),
      intervalMinutes: 15,
      energyWh: 100,
      registerWh: 100,
    };
    await c.publishAsync('tre/v1/meter/k0/reading', JSON.stringify(first), { qos: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect(receipts).toEqual([]);
    c.end(true);
    expect(await again.stop()).toBe(0);
    const last = await developmentStore(data);
    expect(
      last.db
        .prepare("SELECT count(*) AS n FROM readings WHERE meter_id = 'k0' AND interval_start = ?")
        .get(base),
    ).toEqual({ n: 1 });
    last.close();
  });
});
