/**
 * Privacy of the logs: drive every flow (readings in and out of bounds, conflicting duplicates, bids,
 * refusals, groups) and check that no log line at info level or above carries a meter id, an
 * account, a bid id, or a reading's energy or register value.
 */
import { Writable } from 'node:stream';
import { ManualClock, topics } from '@tre/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

const lines: string[] = [];
const sink = new Writable({
  write(chunk, _enc, cb) {
    lines.push(...chunk.toString().split('\n').filter(Boolean));
    cb();
  },
});
const T0 = Date.UTC(2026, 3, 6, 10);
let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture({
    clock: new ManualClock(T0 + 3_600_000),
    logLevel: 'debug',
    logDestination: sink,
  });
});
afterAll(async () => fx?.close());

describe('log privacy', () => {
  it('no household identifier or reading value at info level or above', async () => {
    const secrets = ['zq-meter-7781', 'acc-zq-meter-7781', 'bid-zq-secret-42', '73917', '4242424'];
    await fx.issue('meter', 'zq-meter-7781');
    const c = await fx.connect('meter', 'zq-meter-7781');
    const receipts = (n: number) => nextMessage(c, 'tre/v1/meter/zq-meter-7781/inbox/receipt').then(() => n);
    // A reading's refusal receipt arrives before its PUBACK, and an acceptance is the PUBACK alone.
    const send = (body: object) =>
      c.publishAsync(topics.reading('zq-meter-7781'), JSON.stringify(body), { qos: 1 });
    await c.subscribeAsync('tre/v1/meter/zq-meter-7781/inbox/receipt', { qos: 1 });
    const reading = {
      v: 1,
      requestId: 'rq1',
      intervalStart: new Date(T0).toISOString(),
      intervalMinutes: 15,
      energyWh: 73917,
      registerWh: 4242424,
    };
    await send(reading); // out of bounds (10 kW x 15 min = 2500 Wh): excluded, alerted, refused
    await send({
      ...reading,
      intervalStart: new Date(T0 + 900_000).toISOString(),
      energyWh: 100,
      registerWh: 4242524,
    });
    await send({
      ...reading,
      intervalStart: new Date(T0 + 900_000).toISOString(),
      energyWh: 101,
      registerWh: 4242525,
    }); // conflict
    await send({ v: 1, requestId: 'bad', energyWh: 73917 }); // malformed
    const r = receipts(0);
    await c.publishAsync(
      topics.bid('zq-meter-7781'),
      JSON.stringify({
        v: 1,
        requestId: 'b1',
        bidId: 'bid-zq-secret-42',
        eventId: 'none',
        quantityWh: 73917,
        pricePerMWh: 1,
      }),
      { qos: 1 },
    );
    await r;
    c.publish('tre/v1/meter/other/reading', '{}', { qos: 1 }); // access refused: the connection is closed
    await new Promise((res) => setTimeout(res, 200));
    const visible = lines.filter((l) => (JSON.parse(l) as { level: number }).level >= 30);
    expect(visible.length).toBeGreaterThan(3); // refusals and alerts were logged...
    for (const line of visible) for (const s of secrets) expect(line, line).not.toContain(s); // ...without identifiers
  });
});
