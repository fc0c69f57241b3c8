/** Durable, idempotent ingest of readings through real mTLS clients. */
import type { Receipt } from '@tre/protocol';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture();
});
afterAll(async () => fx?.close());

const base = Date.UTC(2026, 0, 5, 0, 0);
const at = (i: number) => new Date(base + i * 15 * 60_000).toISOString().replace('.000Z', 'Z');
let seq = 0;
function reading(i: number, registerWh: number, energyWh: number, extra: Record<string, unknown> = {}) {
  return {
    v: 1,
    requestId: `r${++seq}`,
    intervalStart: at(i),
    intervalMinutes: 15,
    energyWh,
    registerWh,
    ...extra,
  };
}

async function send(client: MqttClient, meter: string, body: unknown): Promise<Receipt> {
  const receipt = nextMessage(client, `tre/v1/meter/${meter}/inbox/receipt`);
  await client.publishAsync(`tre/v1/meter/${meter}/reading`, JSON.stringify(body), { qos: 1 });
  return JSON.parse((await receipt).payload.toString()) as Receipt;
}

function stored(meter: string) {
  return fx.tre.store.db
    .prepare(
      'SELECT interval_start, effective_wh, status FROM readings WHERE meter_id = ? ORDER BY interval_start',
    )
    .all(meter) as { interval_start: number; effective_wh: number; status: string }[];
}

describe('reading ingest', () => {
  it('stores a reading before the PUBACK and acknowledges a resend as a duplicate', async () => {
    const c = await fx.connect('meter', 'i1');
    const first = reading(0, 1000, 100);
    expect(await send(c, 'i1', first)).toMatchObject({ status: 'accepted', requestId: first.requestId });
    expect(stored('i1')).toHaveLength(1);
    expect(await send(c, 'i1', { ...first, requestId: 'resend' })).toMatchObject({
      status: 'accepted',
      duplicate: true,
    });
    expect(stored('i1')).toHaveLength(1);
  });

  it('derives energy from register differences, so the reported energy cannot double-count', async () => {
    const c = await fx.connect('meter', 'i2');
    await send(c, 'i2', reading(0, 5000, 200));
    await send(c, 'i2', reading(1, 5300, 9999)); // reported energy is ignored when the register difference exists
    expect(stored('i2').map((r) => r.effective_wh)).toEqual([200, 300]);
  });

  it('refuses a conflicting duplicate and alerts the household', async () => {
    const c = await fx.connect('meter', 'i3');
    await send(c, 'i3', reading(0, 1000, 100));
    const alert = nextMessage(c, 'tre/v1/meter/i3/inbox/alert');
    expect(await send(c, 'i3', reading(0, 1200, 300))).toMatchObject({
      status: 'refused',
      reason: 'CONFLICTING_DUPLICATE',
    });
    expect(JSON.parse((await alert).payload.toString())).toMatchObject({ kind: 'conflicting-duplicate' });
    expect(stored('i3')[0]?.effective_wh).toBe(100);
  });

  it('excludes out-of-bounds readings: above capacity, negative, register backwards', async () => {
    const c = await fx.connect('meter', 'i4'); // 10 kW -> at most 2500 Wh per 15 min
    expect(await send(c, 'i4', reading(0, 10_000, 2600))).toMatchObject({
      status: 'refused',
      reason: 'OUT_OF_BOUNDS',
    });
    expect(await send(c, 'i4', reading(1, 10_100, -5))).toMatchObject({ reason: 'OUT_OF_BOUNDS' });
    expect(await send(c, 'i4', reading(2, 20_000, 100))).toMatchObject({ status: 'accepted' });
    expect(await send(c, 'i4', reading(3, 19_000, 100))).toMatchObject({
      reason: 'OUT_OF_BOUNDS',
      message: /backwards/,
    });
    expect(stored('i4').map((r) => r.status)).toEqual(['excluded', 'excluded', 'ok', 'excluded']);
    const alerts = fx.tre.store.db.prepare("SELECT kind FROM alerts WHERE meter_id = 'i4'").all();
    expect(alerts).toHaveLength(3);
  });

  it('refuses malformed, unaligned and unfinished intervals with a reason, storing nothing', async () => {
    const c = await fx.connect('meter', 'i5');
    expect(await send(c, 'i5', { v: 1, requestId: 'bad1', intervalStart: 'yesterday' })).toMatchObject({
      reason: 'MALFORMED',
      requestId: 'bad1',
    });
    expect(await send(c, 'i5', { ...reading(0, 1, 1), intervalStart: '2026-01-05T00:07:00Z' })).toMatchObject(
      { reason: 'MALFORMED', message: /aligned/ },
    );
    expect(await send(c, 'i5', { ...reading(0, 1, 1), intervalStart: '2099-01-05T00:00:00Z' })).toMatchObject(
      { reason: 'MALFORMED', message: /not ended/ },
    );
    expect(stored('i5')).toHaveLength(0);
  });

  it('groups concurrent readings into few transactions (group commit)', async () => {
    const meters = await Promise.all(Array.from({ length: 20 }, (_, k) => fx.connect('meter', `gc${k}`)));
    const before = { ...fx.tre.store.stats };
    await Promise.all(
      meters.flatMap((c, k) =>
        Array.from({ length: 5 }, (_, i) =>
          c.publishAsync(`tre/v1/meter/gc${k}/reading`, JSON.stringify(reading(i, 100 * (i + 1), 100)), {
            qos: 1,
          }),
        ),
      ),
    );
    const writes = fx.tre.store.stats.writes - before.writes;
    const transactions = fx.tre.store.stats.transactions - before.transactions;
    expect(writes).toBe(100);
    expect(transactions).toBeLessThan(writes);
  });
});
