/**
 * Durable, idempotent ingest of readings through real mTLS clients. The contract: a reading that is
 * accepted (a duplicate included) gets only its PUBACK; a refused one gets a receipt on the meter's
 * `inbox/receipt`, written before the PUBACK on the same connection.
 */
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

const receiptsOf = new WeakMap<MqttClient, Receipt[]>();

/** Every receipt the client gets, in arrival order (subscribed once per client). */
async function receipts(client: MqttClient, meter: string): Promise<Receipt[]> {
  let list = receiptsOf.get(client);
  if (!list) {
    const got: Receipt[] = [];
    list = got;
    receiptsOf.set(client, got);
    const inbox = `tre/v1/meter/${meter}/inbox/receipt`;
    client.on('message', (topic, payload) => {
      if (topic === inbox) got.push(JSON.parse(payload.toString()) as Receipt);
    });
    await client.subscribeAsync(inbox, { qos: 1 });
  }
  return list;
}

/**
 * Publishes a reading (QoS1) and resolves at its PUBACK with the receipt that arrived before it,
 * or `'accepted'` when the PUBACK came alone.
 */
async function send(client: MqttClient, meter: string, body: unknown): Promise<Receipt | 'accepted'> {
  const got = await receipts(client, meter);
  const before = got.length;
  await client.publishAsync(`tre/v1/meter/${meter}/reading`, JSON.stringify(body), { qos: 1 });
  const ahead = got.slice(before);
  expect(ahead.length, 'at most one receipt per reading').toBeLessThanOrEqual(1);
  return ahead[0] ?? 'accepted';
}

function stored(meter: string) {
  return fx.tre.store.db
    .prepare(
      'SELECT interval_start, effective_wh, status FROM readings WHERE meter_id = ? ORDER BY interval_start',
    )
    .all(meter) as { interval_start: number; effective_wh: number; status: string }[];
}

describe('reading ingest', () => {
  it('stores a reading before the PUBACK (no receipt) and acknowledges a resend the same way', async () => {
    const c = await fx.connect('meter', 'i1');
    const first = reading(0, 1000, 100);
    expect(await send(c, 'i1', first)).toBe('accepted');
    expect(stored('i1')).toHaveLength(1);
    expect(await send(c, 'i1', { ...first, requestId: 'resend' })).toBe('accepted');
    expect(stored('i1')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 200));
    expect(receiptsOf.get(c), 'no receipt for an acceptance, not even late').toEqual([]);
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
    expect(await send(c, 'i4', reading(2, 20_000, 100))).toBe('accepted');
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
    // The readings of a tick are one write (one multi-row INSERT), and a tick's writes one transaction.
    expect(writes).toBeLessThan(100);
    expect(transactions).toBeLessThanOrEqual(writes);
    for (let k = 0; k < 20; k++)
      expect(stored(`gc${k}`).map((r) => r.effective_wh)).toEqual(Array(5).fill(100));
  });

  it('writes a refusal receipt before the PUBACK, under load, and nothing for acceptances', async () => {
    const c = await fx.connect('meter', 'ord');
    await receipts(c, 'ord');
    // What arrives on the wire, in order: receipts (by requestId) and PUBACKs (by messageId).
    const wire: string[] = [];
    const requestOf = new Map<number, string>();
    c.on('packetsend', (p) => {
      if (p.cmd === 'publish' && p.messageId !== undefined)
        requestOf.set(p.messageId, (JSON.parse(p.payload.toString()) as { requestId: string }).requestId);
    });
    c.on('packetreceive', (p) => {
      if (p.cmd === 'publish')
        wire.push(`receipt ${(JSON.parse(p.payload.toString()) as Receipt).requestId}`);
      if (p.cmd === 'puback') wire.push(`puback ${requestOf.get(p.messageId!)}`);
    });
    // 60 readings at once, two intervals apart (no neighbours: each is judged on its own energy):
    // a third out of bounds (refused after the commit), a third not ended yet (refused before it),
    // a third in bounds (accepted).
    const kinds = ['ok', 'out-of-bounds', 'not-ended'] as const;
    await Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        const kind = kinds[i % 3]!;
        const body = {
          ...reading(2 * i, 1_000 * (i + 1), kind === 'out-of-bounds' ? 9_999 : 100),
          requestId: `ord-${i}`,
          ...(kind === 'not-ended' ? { intervalStart: '2099-01-05T00:00:00Z' } : {}),
        };
        return c.publishAsync('tre/v1/meter/ord/reading', JSON.stringify(body), { qos: 1 });
      }),
    );
    const refused = new Set(
      (receiptsOf.get(c) ?? []).filter((r) => r.status === 'refused').map((r) => r.requestId),
    );
    expect(refused.size).toBe(40);
    expect(receiptsOf.get(c)?.every((r) => r.status === 'refused')).toBe(true);
    for (const id of refused) {
      const receiptAt = wire.indexOf(`receipt ${id}`);
      const pubackAt = wire.indexOf(`puback ${id}`);
      expect(receiptAt, `${id}: ${wire.join(', ')}`).toBeGreaterThanOrEqual(0);
      expect(receiptAt, `${id}: receipt before its PUBACK`).toBeLessThan(pubackAt);
    }
    const pubacks = wire.filter((w) => w.startsWith('puback ')).length;
    expect(pubacks).toBe(60);
  });
});
