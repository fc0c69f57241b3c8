/**
 * Bad input never crashes the TRE and never touches stored state: fuzzed payloads on every topic,
 * malformed MQTT at the TCP level, TLS handshakes that never finish, connection and message floods
 * from one identity, replayed and reordered messages.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { PartyRole, Receipt } from '@tre/protocol';
import fc from 'fast-check';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTreFixture, type TreFixture } from './support/tre-fixture.js';

let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture({
    handshakeTimeoutMs: 1_000,
    limits: { connectionsPerIdentity: 4, messagesPerSecond: 50, burst: 100 },
  });
});
afterAll(async () => fx?.close());

function storeHash(): string {
  const db = fx.tre.store.db;
  const tables = (
    db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
      name: string;
    }[]
  ).map((t) => t.name);
  const h = createHash('sha256');
  for (const t of tables)
    h.update(`${t}:${JSON.stringify(db.prepare(`SELECT * FROM "${t}" ORDER BY 1, 2`).all())}\n`);
  return h.digest('hex');
}

const UP: [PartyRole, string][] = [
  ['meter', 'reading'],
  ['meter', 'bid'],
  ['meter', 'attest'],
  ['dno', 'groups'],
  ['supplier', 'tariff'],
  ['supplier', 'billing-period'],
  ['supplier', 'statement-ack'],
  ['dsm', 'event'],
  ['dsm', 'accept/e1'],
  ['regulator', 'registry'],
  ['regulator', 'config'],
];

const hostile = fc.oneof(
  fc.json().map((j) => Buffer.from(j)),
  fc.jsonValue().map((j) => Buffer.from(JSON.stringify({ v: 1, requestId: 'fz', payload: j }))),
  fc
    .record({
      v: fc.oneof(fc.constant(1), fc.anything()),
      requestId: fc.string(),
      intervalStart: fc.string(),
      energyWh: fc.double(),
      registerWh: fc.bigInt().map(String),
    })
    .map((o) => Buffer.from(JSON.stringify(o))),
  fc.constantFrom(
    Buffer.from(
      JSON.stringify({
        v: 1,
        requestId: 'big',
        energyWh: 1e308,
        registerWh: -1e308,
        intervalStart: '2026-01-01T00:00:00Z',
        intervalMinutes: 15,
      }),
    ),
    Buffer.from(`${'['.repeat(5000)}${']'.repeat(5000)}`),
    Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xff]),
    Buffer.from(''),
    Buffer.from('null'),
  ),
  fc.uint8Array({ maxLength: 256 }).map((a) => Buffer.from(a)),
);

/** Publishes and waits for the next receipt (the client is subscribed to its receipts once). */
async function receiptFor(
  client: MqttClient,
  role: PartyRole,
  id: string,
  topic: string,
  payload: Buffer,
): Promise<Receipt | 'closed'> {
  const inbox = `tre/v1/${role}/${id}/inbox/receipt`;
  const receipt = new Promise<Receipt>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no receipt within 5 s')), 5_000);
    const onMessage = (t: string, p: Buffer) => {
      if (t !== inbox) return;
      clearTimeout(timer);
      client.removeListener('message', onMessage);
      resolve(JSON.parse(p.toString()) as Receipt);
    };
    client.on('message', onMessage);
  });
  const closed = new Promise<'closed'>((resolve) => client.once('close', () => resolve('closed')));
  client.publish(topic, payload, { qos: 1 });
  return Promise.race([receipt, closed]);
}

describe('fuzzed payloads on every topic', () => {
  it('each gets a refusal receipt; the broker stays up; the store does not change', {
    timeout: 120_000,
  }, async () => {
    for (const [role] of UP) await fx.issue(role, `fz-${role}`);
    await fx.issue('meter', 'fz-big');
    await fx.issue('meter', 'fz-after');
    const before = storeHash(); // after registering the test's meters, which is a legitimate change
    let tried = 0;
    for (const [role, family] of UP) {
      const id = `fz-${role}`;
      const client = await fx.connect(role, id);
      await client.subscribeAsync(`tre/v1/${role}/${id}/inbox/receipt`, { qos: 1 });
      await fc.assert(
        fc.asyncProperty(hostile, async (payload) => {
          tried++;
          const r = await receiptFor(client, role, id, `tre/v1/${role}/${id}/${family}`, payload);
          expect(r).not.toBe('closed');
          expect((r as Receipt).status).toBe('refused');
        }),
        { numRuns: 40 },
      );
      client.end(true);
    }
    const client = await fx.connect('meter', 'fz-big');
    await client.subscribeAsync('tre/v1/meter/fz-big/inbox/receipt', { qos: 1 });
    const r = await receiptFor(
      client,
      'meter',
      'fz-big',
      'tre/v1/meter/fz-big/reading',
      Buffer.alloc(1024 * 1024 + 10, 0x41),
    );
    expect(r === 'closed' || (r as Receipt).reason === 'TOO_LARGE').toBe(true);
    tried++;
    console.log(
      `bad input: ${tried} hostile payloads tried on ${UP.length} topic families, 0 accepted, store unchanged`,
    );
    expect(storeHash()).toBe(before);
    expect((await fx.connect('meter', 'fz-after')).connected).toBe(true);
  });
});

describe('malformed transport', () => {
  it('garbage MQTT bytes over TLS close that connection only', async () => {
    const files = await fx.issue('meter', 'garbage');
    const [key, cert, ca] = await Promise.all([
      readFile(files.key),
      readFile(files.cert),
      readFile(files.ca),
    ]);
    for (const bytes of [
      Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]), // CONNECT with an invalid remaining length
      Buffer.from([0x30, 0x05, 0x00, 0x01, 0x61, 0x62, 0x63]), // PUBLISH before CONNECT
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
      Buffer.alloc(4096, 0xee),
    ]) {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: fx.tre.port,
        key,
        cert,
        ca,
        servername: 'localhost',
      });
      await new Promise((resolve) => socket.once('secureConnect', resolve));
      socket.write(bytes);
      await new Promise<void>((resolve) => {
        socket.once('close', () => resolve());
        socket.on('error', () => {});
      });
    }
    expect((await fx.connect('meter', 'after-garbage')).connected).toBe(true);
  });

  it('TLS handshakes that never finish are dropped and do not block others', async () => {
    const sockets = Array.from({ length: 50 }, () => {
      const s = tcpConnect(fx.tre.port, '127.0.0.1');
      s.on('error', () => {});
      s.once('connect', () => s.write(Buffer.from([0x16, 0x03, 0x01]))); // a ClientHello that never completes
      return s;
    });
    const client = await fx.connect('meter', 'during-stall');
    expect(client.connected).toBe(true);
    await Promise.all(
      sockets.map(
        (s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve()))),
      ),
    );
  });
});

describe('floods from one identity', () => {
  it('caps concurrent sessions per identity', async () => {
    await fx.issue('meter', 'flooder');
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => fx.connect('meter', 'flooder', { clientId: `c${i}` })),
    );
    expect(results.filter((r) => r.status === 'fulfilled').length).toBe(4);
    expect((await fx.connect('meter', 'someone-else')).connected).toBe(true);
  });

  it('rate-limits messages per identity with RATE_LIMITED receipts', async () => {
    const client = await fx.connect('meter', 'chatty');
    const reasons: string[] = [];
    client.on('message', (_t, p) => reasons.push((JSON.parse(p.toString()) as Receipt).reason ?? 'accepted'));
    await client.subscribeAsync('tre/v1/meter/chatty/inbox/receipt', { qos: 1 });
    await Promise.all(
      Array.from({ length: 300 }, () => client.publishAsync('tre/v1/meter/chatty/attest', '{}', { qos: 1 })),
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(reasons.filter((r) => r === 'RATE_LIMITED').length).toBeGreaterThan(100);
    expect((await fx.connect('meter', 'calm')).connected).toBe(true);
  });
});

describe('replayed and reordered messages', () => {
  it('a replay is a duplicate, a reordered stream stores the same energies as in order', async () => {
    const base = Date.UTC(2026, 0, 10);
    const body = (i: number, reg: number) =>
      JSON.stringify({
        v: 1,
        requestId: `q${i}`,
        intervalStart: new Date(base + i * 900_000).toISOString(),
        intervalMinutes: 15,
        energyWh: 100 * (i + 1),
        registerWh: reg,
      });
    const regs = [100, 300, 600, 1000];
    const inOrder = await fx.connect('meter', 'ordered');
    for (let i = 0; i < 4; i++)
      await inOrder.publishAsync('tre/v1/meter/ordered/reading', body(i, regs[i]!), { qos: 1 });
    const shuffled = await fx.connect('meter', 'shuffled');
    for (const i of [3, 1, 0, 2, 1, 3])
      await shuffled.publishAsync('tre/v1/meter/shuffled/reading', body(i, regs[i]!), { qos: 1 });
    const energies = (m: string) =>
      (
        fx.tre.store.db
          .prepare('SELECT effective_wh FROM readings WHERE meter_id = ? ORDER BY interval_start')
          .all(m) as { effective_wh: number }[]
      ).map((r) => r.effective_wh);
    expect(energies('shuffled')).toEqual(energies('ordered'));
    expect(energies('ordered')).toEqual([100, 200, 300, 400]);
  });
});
