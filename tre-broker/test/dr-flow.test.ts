/**
 * A whole demand-response round through real mTLS clients on a simulated clock: event -> bids ->
 * release at the deadline -> acceptance -> household notifications -> ledger credits -> compliance,
 * with the refusals, and a scan of everything the DSM received for household identifiers.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  DrOutcomeVerifier,
  ManualClock,
  type PseudoBids,
  type Receipt,
  signContent,
  topics,
} from '@tre/protocol';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

const Q = 900_000;
const EVENT_DAY = Date.UTC(2026, 2, 18); // a Wednesday
const WINDOW = EVENT_DAY + 18 * 3_600_000; // 18:00-19:00
const clock = new ManualClock(EVENT_DAY + 12 * 3_600_000);
let fx: TreFixture;
let dsm: MqttClient;
let dsmKey: ReturnType<typeof createPrivateKey>;
let treCert: X509Certificate;
const dsmGot: { topic: string; payload: string; at: number }[] = [];
const dsmInbox: string[] = [];
const meters = ['dr1', 'dr2', 'dr3', 'dr4'];
const clients: Record<string, MqttClient> = {};
const registers: Record<string, number> = {};

async function send(client: MqttClient, inbox: string, topic: string, body: unknown): Promise<Receipt> {
  const receipt = nextMessage(client, inbox);
  await client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  return JSON.parse((await receipt).payload.toString()) as Receipt;
}
const bid = (m: string, body: object) =>
  send(clients[m]!, `tre/v1/meter/${m}/inbox/receipt`, topics.bid(m), {
    v: 1,
    requestId: `household-bid-req-${Math.random().toString(36).slice(2)}`,
    ...body,
  });

/** The DSM's signed acceptance of evt-1 in its envelope. */
/** A household's outcome notice, verified as its agent does (signed root, proof, names itself). */
async function verifiedOutcome(m: string, notice: { payload: Buffer }) {
  const text = notice.payload.toString();
  // Nothing of another household but sibling hashes.
  for (const other of meters.filter((o) => o !== m)) {
    expect(text).not.toContain(`"${other}"`);
    expect(text).not.toContain(`bid-${other}-`);
  }
  const checked = await new DrOutcomeVerifier().verify(JSON.parse(text), {
    meterId: m,
    treKey: treCert.publicKey,
    treKeyId: treCert.fingerprint256,
  });
  if (!checked.ok) throw new Error(`${m}: ${checked.reason}: ${checked.message}`);
  return checked;
}

const signedAcceptance = async (requestId: string, accepted: (string | undefined)[]) => ({
  v: 1,
  requestId,
  jws: await signContent('drAcceptance', { v: 1, eventId: 'evt-1', dsmId: 'x1', accepted }, dsmKey),
});

/** Readings of one meter for [from, from + n x 15 min), `wh` per interval. */
async function readings(m: string, from: number, n: number, wh: number) {
  for (let i = 0; i < n; i++) {
    registers[m] = (registers[m] ?? 100_000) + wh;
    await clients[m]!.publishAsync(
      topics.reading(m),
      JSON.stringify({
        v: 1,
        requestId: `household-reading-req-${from + i * Q}`,
        intervalStart: new Date(from + i * Q).toISOString(),
        intervalMinutes: 15,
        energyWh: wh,
        registerWh: registers[m],
      }),
      { qos: 1 },
    );
  }
}

beforeAll(async () => {
  fx = await startTreFixture({ clock, demandResponse: { complianceGraceMs: 30 * 60_000 } });
  treCert = new X509Certificate(await readFile(`${fx.treDir}/tre.crt`));
  dsmKey = createPrivateKey(await readFile((await fx.issue('dsm', 'x1')).key));
  dsm = await fx.connect('dsm', 'x1');
  // What the DSM learns from the TRE about the round (its own receipts aside, checked separately below).
  dsm.on('message', (topic, payload) => {
    if (!topic.includes('/inbox/')) dsmGot.push({ topic, payload: payload.toString(), at: clock.now() });
    else dsmInbox.push(payload.toString());
  });
  await dsm.subscribeAsync(['tre/v1/dsm/x1/bids/+', 'tre/v1/dsm/x1/compliance/+'], { qos: 1 });
  for (const m of meters) {
    await fx.issue('meter', m, undefined, { capacityW: 8_000 });
    clients[m] = await fx.connect('meter', m);
    await clients[m]!.subscribeAsync(`tre/v1/meter/${m}/inbox/+`, { qos: 1 });
    // History: 250 Wh per quarter hour between 18:00 and 19:00 on the 14 days before.
    for (let d = 14; d >= 1; d--) await readings(m, WINDOW - d * 86_400_000, 4, 250);
  }
});
afterAll(async () => fx?.close());

const event = {
  v: 1,
  eventId: 'evt-1',
  dsmId: 'x1',
  windowStart: new Date(WINDOW).toISOString(),
  windowEnd: new Date(WINDOW + 3_600_000).toISOString(),
  bidDeadline: new Date(WINDOW - 2 * 3_600_000).toISOString(),
  acceptBy: new Date(WINDOW - 3_600_000).toISOString(),
  requestedReductionWh: 1_000,
  priceCapPerMWh: 400_000,
};

describe('demand-response round', () => {
  let released: PseudoBids;
  const bidIds: string[] = [];

  it('announces a signed event and refuses invalid ones', async () => {
    const inbox = 'tre/v1/dsm/x1/inbox/receipt';
    const bad = { ...event, eventId: 'evt-bad', bidDeadline: new Date(WINDOW + 60_000).toISOString() };
    expect(
      await send(dsm, inbox, topics.drEvent('x1'), {
        v: 1,
        requestId: 'e0',
        jws: await signContent('drEvent', bad, dsmKey),
      }),
    ).toMatchObject({ reason: 'EVENT_INVALID' });
    const announced = nextMessage(clients.dr1!, 'tre/v1/broadcast/dr-event/+');
    expect(
      await send(dsm, inbox, topics.drEvent('x1'), {
        v: 1,
        requestId: 'e1',
        jws: await signContent('drEvent', event, dsmKey),
      }),
    ).toMatchObject({ status: 'accepted' });
    const a = JSON.parse((await announced).payload.toString()) as { jws: string };
    expect(a.jws.split('.')).toHaveLength(3);
  });

  it('bids: stored with reasons for every refusal; a second bid supersedes the first', async () => {
    bidIds.push('bid-dr1-aaaa', 'bid-dr2-aaaa', 'bid-dr3-aaaa', 'bid-dr3-bbbb');
    expect(
      await bid('dr1', { bidId: bidIds[0], eventId: 'evt-1', quantityWh: 600, pricePerMWh: 300_000 }),
    ).toMatchObject({ status: 'accepted' });
    expect(
      await bid('dr2', { bidId: bidIds[1], eventId: 'evt-1', quantityWh: 500, pricePerMWh: 200_000 }),
    ).toMatchObject({ status: 'accepted' });
    expect(
      await bid('dr3', { bidId: bidIds[2], eventId: 'evt-1', quantityWh: 300, pricePerMWh: 390_000 }),
    ).toMatchObject({ status: 'accepted' });
    expect(
      await bid('dr3', { bidId: bidIds[3], eventId: 'evt-1', quantityWh: 400, pricePerMWh: 380_000 }),
    ).toMatchObject({ status: 'accepted', message: /supersedes/ });
    expect(
      await bid('dr4', { bidId: 'bid-dr4-cap', eventId: 'evt-1', quantityWh: 100, pricePerMWh: 400_001 }),
    ).toMatchObject({ reason: 'ABOVE_PRICE_CAP' });
    expect(
      await bid('dr4', { bidId: 'bid-dr4-big', eventId: 'evt-1', quantityWh: 1_001, pricePerMWh: 1 }),
    ).toMatchObject({ reason: 'ABOVE_SHEDDABLE' });
    expect(
      await bid('dr4', { bidId: 'bid-dr4-unk', eventId: 'evt-nope', quantityWh: 100, pricePerMWh: 1 }),
    ).toMatchObject({ reason: 'UNKNOWN_EVENT' });
    expect(
      await bid('dr1', { bidId: bidIds[0], eventId: 'evt-1', quantityWh: 600, pricePerMWh: 300_000 }),
    ).toMatchObject({ status: 'accepted', duplicate: true });
    expect(
      await bid('dr1', { bidId: bidIds[0], eventId: 'evt-1', quantityWh: 900, pricePerMWh: 300_000 }),
    ).toMatchObject({ reason: 'REPLAYED' });
    expect(dsmGot).toEqual([]); // nothing before the deadline
  });

  it('releases all live pseudo-bids at the deadline in one message, and refuses later bids', async () => {
    clock.advance(Date.parse(event.bidDeadline) - clock.now());
    for (let i = 0; i < 50 && dsmGot.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(
      await bid('dr4', { bidId: 'bid-dr4-late', eventId: 'evt-1', quantityWh: 100, pricePerMWh: 1 }),
    ).toMatchObject({ reason: 'BID_DEADLINE_PASSED' });
    expect(dsmGot).toHaveLength(1);
    released = JSON.parse(dsmGot[0]!.payload) as PseudoBids;
    expect(released.bids.map((b) => b.quantityWh).sort()).toEqual([400, 500, 600]);
    for (const b of released.bids)
      expect(Object.keys(b).sort()).toEqual(['pricePerMWh', 'pseudonym', 'quantityWh']);
  });

  it('acceptance: unknown pseudonyms refused; households told; credits exact; pseudonyms die', async () => {
    const inbox = 'tre/v1/dsm/x1/inbox/receipt';
    const byQ = Object.fromEntries(released.bids.map((b) => [b.quantityWh, b.pseudonym]));
    expect(
      await send(dsm, inbox, topics.accept('x1', 'evt-1'), await signedAcceptance('a0', ['A'.repeat(22)])),
    ).toMatchObject({ reason: 'UNKNOWN_PSEUDONYM' });
    const outcome1 = nextMessage(clients.dr1!, 'tre/v1/meter/dr1/inbox/dr-outcome');
    const outcome3 = nextMessage(clients.dr3!, 'tre/v1/meter/dr3/inbox/dr-outcome');
    expect(
      await send(
        dsm,
        inbox,
        topics.accept('x1', 'evt-1'),
        await signedAcceptance('a1', [byQ[600], byQ[500]]),
      ),
    ).toMatchObject({ status: 'accepted' });
    const o1 = await verifiedOutcome('dr1', await outcome1);
    expect(o1.outcome).toMatchObject({
      kind: 'acceptance',
      bidId: bidIds[0],
      outcome: 'accepted',
      creditMicroMinor: -600 * 300_000,
    });
    const o3 = await verifiedOutcome('dr3', await outcome3);
    expect(o3.outcome).toMatchObject({ kind: 'acceptance', bidId: bidIds[3], outcome: 'not-accepted' });
    // One signed root for the round: every live bid is a leaf (dr1, dr2, dr3's second bid).
    expect(o3.root).toEqual(o1.root);
    expect(o1.root).toMatchObject({ eventId: 'evt-1', kind: 'acceptance', leafCount: 3 });
    const credits = fx.tre.store.db
      .prepare("SELECT meter_id, amount_micro FROM ledger WHERE kind = 'dr-credit' ORDER BY meter_id")
      .all();
    expect(credits).toEqual([
      { meter_id: 'dr1', amount_micro: -180_000_000 },
      { meter_id: 'dr2', amount_micro: -100_000_000 },
    ]);
    expect(
      await send(dsm, inbox, topics.accept('x1', 'evt-1'), await signedAcceptance('a2', [byQ[400]])),
    ).toMatchObject({ reason: 'REPLAYED' });
  });

  it('compliance after the window: per pseudonym, no readings; a shortfall reverses the credit', async () => {
    clock.advance(WINDOW + 3_600_000 + 60_000 - clock.now()); // the window has ended
    await readings('dr1', WINDOW, 4, 100); // 400 Wh vs baseline 1000: reduced 600 = delivered
    await readings('dr2', WINDOW, 4, 250); // no reduction: not delivered
    const settled1 = nextMessage(clients.dr1!, 'tre/v1/meter/dr1/inbox/dr-outcome');
    const settled2 = nextMessage(clients.dr2!, 'tre/v1/meter/dr2/inbox/dr-outcome');
    clock.advance(30 * 60_000); // past the compliance grace period
    for (let i = 0; i < 50 && dsmGot.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    const s1 = await verifiedOutcome('dr1', await settled1);
    const s2 = await verifiedOutcome('dr2', await settled2);
    expect(s1.outcome).toMatchObject({ kind: 'settlement', bidId: bidIds[0], outcome: 'delivered' });
    expect(s1.outcome.creditMicroMinor).toBeUndefined();
    expect(s2.outcome).toMatchObject({
      kind: 'settlement',
      bidId: bidIds[1],
      outcome: 'not-delivered',
      creditMicroMinor: 100_000_000,
    });
    expect(s1.root).toEqual(s2.root);
    expect(s1.root).toMatchObject({ kind: 'settlement', leafCount: 2 }); // the accepted bids only
    const report = JSON.parse(dsmGot[1]!.payload) as { results: { pseudonym: string; delivered: boolean }[] };
    const byQ = Object.fromEntries(released.bids.map((b) => [b.pseudonym, b.quantityWh]));
    expect(Object.fromEntries(report.results.map((r) => [byQ[r.pseudonym], r.delivered]))).toEqual({
      600: true,
      500: false,
    });
    const net = fx.tre.store.db
      .prepare(
        "SELECT meter_id, sum(amount_micro) AS s FROM ledger WHERE kind LIKE 'dr-%' GROUP BY meter_id ORDER BY meter_id",
      )
      .all();
    expect(net).toEqual([
      { meter_id: 'dr1', s: -180_000_000 },
      { meter_id: 'dr2', s: 0 },
    ]);
  });

  it('the DSM never received a household identifier, and one message per stage', () => {
    const all = [...dsmGot.map((m) => `${m.topic} ${m.payload}`), ...dsmInbox].join('\n');
    for (const secret of [
      ...meters,
      ...meters.map((m) => `acc-${m}`),
      ...bidIds,
      'household-bid-req-',
      'household-reading-req-',
    ])
      expect(all).not.toContain(secret);
    expect(dsmGot.map((m) => m.topic)).toEqual([
      'tre/v1/dsm/x1/bids/evt-1',
      'tre/v1/dsm/x1/compliance/evt-1',
    ]);
  });
});
