/**
 * The demand-response lifecycle end to end: a real TRE over mutual TLS on a simulated clock, two
 * household agents (real TreLink, HouseholdAgent, johnny-five over a recording mock IO: no GPIO
 * here) and a DSM client. The DSM cancels and modifies events at each stage (before the deadline,
 * after acceptance during the window, after settlement), a household overrides its accepted shed,
 * and the refusals: another DSM, another party, an unknown event, replays. Ledger totals are exact
 * integers (micro-minor units); the household statements show the compensating lines.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoadSwitch, MockIo } from '@tre/hardware';
import { type DrEvent, ManualClock, type PseudoBids, type Receipt, signContent, topics } from '@tre/protocol';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  publishOutcome,
  startTreFixture,
  type TreFixture,
} from '../../tre-broker/test/support/tre-fixture.js';
import { HouseholdAgent } from '../src/household-agent.js';
import { Outbox } from '../src/outbox.js';
import { TreLink, trustWithoutAttestation } from '../src/tre-link.js';

const H = 3_600_000;
const Q = 900_000;
const DAY = 86_400_000;
const DAY0 = Date.UTC(2026, 2, 18); // Wednesday
/** The event days: Wed, Thu, Fri, Mon (all weekdays: the same comparable history). */
const DAYS = [DAY0, DAY0 + DAY, DAY0 + 2 * DAY, DAY0 + 5 * DAY];
const clock = new ManualClock(DAY0 + 8 * H);
const METERS = ['h1', 'h2'];
const PRICE = 300_000;
const QUANTITY = 600;
const CREDIT = QUANTITY * PRICE; // 180,000,000 micro-minor = 180 minor

let fx: TreFixture;
let dsm: MqttClient;
let dsmKey: KeyObject;
const dsmGot: { topic: string; payload: string }[] = [];
const dsmReceipts: Receipt[] = [];
const agents: Record<string, { agent: HouseholdAgent; io: MockIo; link: TreLink }> = {};
const registers: Record<string, number> = {};

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let seq = 0;
/** Publishes a DSM request and resolves with its receipt. */
async function dsmSend(client: MqttClient, id: string, topic: string, body: object): Promise<Receipt> {
  const requestId = `q${++seq}`;
  const inbox = `tre/v1/dsm/${id}/inbox/receipt`;
  const got = new Promise<Receipt>((resolve) => {
    const on = (t: string, p: Buffer) => {
      const r = JSON.parse(p.toString()) as Receipt;
      if (t === inbox && r.requestId === requestId) {
        client.removeListener('message', on);
        resolve(r);
      }
    };
    client.on('message', on);
  });
  await client.publishAsync(topic, JSON.stringify({ v: 1, requestId, ...body }), { qos: 1 });
  return got;
}

let issued = 0;
/** A fresh, later issuedAt for each change. */
const issuedAt = () => new Date(Date.UTC(2026, 0, 1) + ++issued * 1000).toISOString();
const cancelJws = (eventId: string, key = dsmKey, dsmId = 'x1', at = issuedAt()) =>
  signContent('drCancel', { v: 1, eventId, dsmId, issuedAt: at }, key);
const modifyJws = (eventId: string, terms: object, at = issuedAt()) =>
  signContent('drModify', { v: 1, eventId, dsmId: 'x1', issuedAt: at, terms }, dsmKey);

function eventOn(eventId: string, day: number): DrEvent {
  const start = day + 18 * H;
  return {
    v: 1,
    eventId,
    dsmId: 'x1',
    windowStart: new Date(start).toISOString(),
    windowEnd: new Date(start + H).toISOString(),
    bidDeadline: new Date(start - 2 * H).toISOString(),
    acceptBy: new Date(start - H).toISOString(),
    requestedReductionWh: 2_000,
    priceCapPerMWh: 400_000,
  };
}

async function raise(event: DrEvent) {
  const r = await dsmSend(dsm, 'x1', topics.drEvent('x1'), {
    jws: await signContent('drEvent', event, dsmKey),
  });
  expect(r).toMatchObject({ status: 'accepted' });
}

const liveBids = (eventId: string, status = 'live') =>
  fx.tre.store.db
    .prepare('SELECT meter_id, price FROM dr_bids WHERE event_id = ? AND status = ? ORDER BY meter_id')
    .all(eventId, status) as { meter_id: string; price: number }[];
const proposalsOf = (m: string, eventId: string) =>
  agents[m]!.agent.status().proposals.filter((p) => p.eventId === eventId);
/** Every DR ledger line of an event's references, per household. */
const drLines = (eventId: string) =>
  fx.tre.store.db
    .prepare(
      "SELECT meter_id, kind, ref, amount_micro FROM ledger WHERE kind != 'energy' AND (ref = ? OR ref LIKE ? || '#%' OR ref LIKE ? || ':%') ORDER BY meter_id, ref, kind",
    )
    .all(eventId, eventId, eventId) as {
    meter_id: string;
    kind: string;
    ref: string;
    amount_micro: number;
  }[];
const drSum = (eventId: string, m: string) =>
  drLines(eventId)
    .filter((l) => l.meter_id === m)
    .reduce((a, l) => a + l.amount_micro, 0);

/** Readings through the agent's outbox: `n` quarter hours of `wh` from `from`. */
function feed(m: string, from: number, n: number, wh: number) {
  for (let i = 0; i < n; i++) {
    registers[m] = (registers[m] ?? 100_000) + wh;
    agents[m]!.agent.recordInterval({
      intervalStart: new Date(from + i * Q).toISOString(),
      intervalMinutes: 15,
      importWh: wh,
      importRegisterWh: registers[m],
      exportWh: 0,
      exportRegisterWh: 0,
    } as Parameters<HouseholdAgent['recordInterval']>[0]);
  }
}
const stored = (m: string, from: number, to: number) =>
  (
    fx.tre.store.db
      .prepare(
        'SELECT count(*) AS n FROM readings WHERE meter_id = ? AND interval_start >= ? AND interval_start < ?',
      )
      .get(m, from, to) as { n: number }
  ).n;

/** Advances the simulated clock to `t` and lets the TRE's and agents' timers run. */
async function advanceTo(t: number) {
  clock.advance(t - clock.now());
  await new Promise((r) => setTimeout(r, 50));
}

async function bidsReleased(eventId: string): Promise<PseudoBids> {
  const topic = `tre/v1/dsm/x1/bids/${eventId}`;
  await until(`bids of ${eventId}`, () => dsmGot.some((g) => g.topic === topic));
  return JSON.parse(dsmGot.filter((g) => g.topic === topic).at(-1)!.payload) as PseudoBids;
}

async function acceptAll(eventId: string) {
  const bids = await bidsReleased(eventId);
  const jws = await signContent(
    'drAcceptance',
    { v: 1, eventId, dsmId: 'x1', accepted: bids.bids.map((b) => b.pseudonym) },
    dsmKey,
  );
  expect(await dsmSend(dsm, 'x1', topics.accept('x1', eventId), { jws })).toMatchObject({
    status: 'accepted',
  });
  for (const m of METERS)
    await until(`${m} accepted in ${eventId}`, () =>
      proposalsOf(m, eventId).some((p) => p.status === 'accepted'),
    );
}

beforeAll(async () => {
  fx = await startTreFixture({ clock, demandResponse: { complianceGraceMs: 30 * 60_000 } });
  dsmKey = createPrivateKey(await readFile((await fx.issue('dsm', 'x1')).key));
  dsm = await fx.connect('dsm', 'x1');
  dsm.on('message', (topic, payload) => {
    if (topic.includes('/inbox/')) dsmReceipts.push(JSON.parse(payload.toString()) as Receipt);
    else dsmGot.push({ topic, payload: payload.toString() });
  });
  await dsm.subscribeAsync(['tre/v1/dsm/x1/bids/+', 'tre/v1/dsm/x1/compliance/+', 'tre/v1/dsm/x1/inbox/+'], {
    qos: 1,
  });
  for (const m of METERS) {
    const files = await fx.issue('meter', m, undefined, { capacityW: 8_000 });
    const dir = await mkdtemp(join(tmpdir(), `dr-life-${m}-`));
    const link = new TreLink({
      meterId: m,
      endpoints: [fx.url],
      tls: { key: await readFile(files.key), cert: await readFile(files.cert), ca: await readFile(files.ca) },
      outbox: new Outbox(join(dir, 'outbox.jsonl')),
      clock,
      attestor: trustWithoutAttestation,
      attestEveryMs: 30 * DAY,
      receiptTimeoutMs: 30 * DAY,
    });
    const io = new MockIo();
    let n = 0;
    const agent = new HouseholdAgent({
      link,
      clock,
      stateDir: dir,
      mode: 'auto-bid',
      loads: await LoadSwitch.open(io),
      randomId: () => `bid-${m}-${String(++n).padStart(4, '0')}`,
      // The policy: 600 Wh of the EV charger for the window, at 300,000 or the event's cap if lower.
      propose: (event) => ({
        bid: {
          quantityWh: QUANTITY,
          pricePerMWh: Math.min(PRICE, event.priceCapPerMWh),
          loads: [{ name: 'ev', actuator: 'relay:17', from: event.windowStart, to: event.windowEnd }],
        },
      }),
    });
    agents[m] = { agent, io, link };
    link.start();
    await until(`${m} trusted`, () => link.state === 'trusted');
    // History: 250 Wh per quarter hour 18:00-19:00 on the 14 days before (baseline 1,000 Wh).
    for (let d = 14; d >= 1; d--) feed(m, DAY0 + 18 * H - d * DAY, 4, 250);
  }
  for (const m of METERS) await until(`${m} history`, () => stored(m, 0, DAY0) === 56);
}, 60_000);

afterAll(async () => {
  for (const { agent, link } of Object.values(agents)) {
    agent.stop();
    await link.stop();
  }
  await fx?.close();
});

describe('demand-response lifecycle', () => {
  it('cancel before the deadline: bids voided, agents told (TRE-signed), nothing released to the DSM', async () => {
    await raise(eventOn('evt-a', DAYS[0]!));
    await until('bids on evt-a', () => liveBids('evt-a').length === 2);
    const r = await dsmSend(dsm, 'x1', topics.drCancel('x1', 'evt-a'), { jws: await cancelJws('evt-a') });
    expect(r).toMatchObject({ status: 'accepted', message: 'event cancelled' });
    for (const m of METERS)
      await until(`${m} voided`, () => proposalsOf(m, 'evt-a').every((p) => p.status === 'voided'));
    expect(liveBids('evt-a', 'voided').map((b) => b.meter_id)).toEqual(METERS);
    expect(agents.h1!.agent.status().openEvents).not.toContain('evt-a');
    // The same cancel again with a later issuedAt: the event is already cancelled.
    expect(
      await dsmSend(dsm, 'x1', topics.drCancel('x1', 'evt-a'), { jws: await cancelJws('evt-a') }),
    ).toMatchObject({ status: 'refused', reason: 'REPLAYED' });
  });

  it('modify before the deadline: bids voided, agents decide again against the new terms', async () => {
    await raise(eventOn('evt-b', DAYS[0]!));
    await until('bids on evt-b', () => liveBids('evt-b').length === 2);
    const m1 = await modifyJws('evt-b', { priceCapPerMWh: 200_000 });
    expect(await dsmSend(dsm, 'x1', topics.drModify('x1', 'evt-b'), { jws: m1 })).toMatchObject({
      status: 'accepted',
      message: 'event modified (revision 1)',
    });
    // A resend of the same signed change is a duplicate, not applied twice.
    expect(await dsmSend(dsm, 'x1', topics.drModify('x1', 'evt-b'), { jws: m1 })).toMatchObject({
      status: 'accepted',
      duplicate: true,
    });
    for (const m of METERS)
      await until(`${m} re-bid`, () =>
        proposalsOf(m, 'evt-b').some(
          (p) => p.status === 'bid' && p.revision === 1 && p.pricePerMWh === 200_000,
        ),
      );
    await until('new bids on evt-b', () => liveBids('evt-b').length === 2);
    expect(liveBids('evt-b')).toEqual([
      { meter_id: 'h1', price: 200_000 },
      { meter_id: 'h2', price: 200_000 },
    ]);
    for (const m of METERS)
      expect(proposalsOf(m, 'evt-b')[0]).toMatchObject({ status: 'voided', pricePerMWh: PRICE });
    // A second modification, then the first one replayed: refused.
    expect(
      await dsmSend(dsm, 'x1', topics.drModify('x1', 'evt-b'), {
        jws: await modifyJws('evt-b', { requestedReductionWh: 1_500 }),
      }),
    ).toMatchObject({ status: 'accepted', message: 'event modified (revision 2)' });
    expect(await dsmSend(dsm, 'x1', topics.drModify('x1', 'evt-b'), { jws: m1 })).toMatchObject({
      status: 'refused',
      reason: 'REPLAYED',
    });
    for (const m of METERS)
      await until(`${m} re-bid on revision 2`, () =>
        proposalsOf(m, 'evt-b').some((p) => p.status === 'bid' && p.revision === 2),
      );
    await until(
      'revision 2 bids',
      () => liveBids('evt-b').length === 2 && liveBids('evt-b', 'voided').length === 4,
    );
    // A modification must open bidding again: a deadline in the past is refused with what to do.
    expect(
      await dsmSend(dsm, 'x1', topics.drModify('x1', 'evt-b'), {
        jws: await modifyJws('evt-b', { bidDeadline: new Date(DAYS[0]! + 7 * H).toISOString() }),
      }),
    ).toMatchObject({ status: 'refused', reason: 'EVENT_INVALID', message: /opens bidding again/ });
  });

  it('at the deadline the DSM gets only the current bids, and nothing of the cancelled event', async () => {
    await advanceTo(DAYS[0]! + 16 * H);
    const bids = await bidsReleased('evt-b');
    expect(bids.bids.map((b) => b.pricePerMWh)).toEqual([200_000, 200_000]);
    await new Promise((r) => setTimeout(r, 200));
    expect(dsmGot.map((g) => g.topic)).toEqual(['tre/v1/dsm/x1/bids/evt-b']);
  });

  it('cancel after acceptance, during the window: loads back at once, outcome cancelled, no credit', async () => {
    await raise(eventOn('evt-c', DAYS[1]!));
    await until('bids on evt-c', () => liveBids('evt-c').length === 2);
    await advanceTo(DAYS[1]! + 16 * H);
    await acceptAll('evt-c');
    expect(drLines('evt-c').map((l) => l.amount_micro)).toEqual([-CREDIT, -CREDIT]);
    await advanceTo(DAYS[1]! + 18 * H + 15 * 60_000);
    for (const m of METERS) expect(agents[m]!.io.level(17)).toBe(1); // shedding
    expect(
      await dsmSend(dsm, 'x1', topics.drCancel('x1', 'evt-c'), { jws: await cancelJws('evt-c') }),
    ).toMatchObject({ status: 'accepted', message: 'event cancelled' });
    for (const m of METERS) {
      await until(`${m} cancelled`, () => proposalsOf(m, 'evt-c')[0]?.status === 'cancelled');
      expect(agents[m]!.io.level(17)).toBe(0); // loads restored before the window ends
      await until(`${m} cancellation outcome`, () =>
        agents[m]!.agent.outcomes.some((o) => o.eventId === 'evt-c' && o.kind === 'cancellation'),
      );
      expect(
        agents[m]!.agent.outcomes.find((o) => o.eventId === 'evt-c' && o.kind === 'cancellation'),
      ).toMatchObject({ outcome: 'cancelled', creditMicroMinor: CREDIT });
      expect(drSum('evt-c', m)).toBe(0);
    }
    expect(drLines('evt-c')).toEqual([
      { meter_id: 'h1', kind: 'dr-credit', ref: 'evt-c', amount_micro: -180_000_000 },
      { meter_id: 'h1', kind: 'dr-reversal', ref: 'evt-c:void', amount_micro: 180_000_000 },
      { meter_id: 'h2', kind: 'dr-credit', ref: 'evt-c', amount_micro: -180_000_000 },
      { meter_id: 'h2', kind: 'dr-reversal', ref: 'evt-c:void', amount_micro: 180_000_000 },
    ]);
    // After the window and its grace: no settlement and no compliance report for a cancelled event.
    await advanceTo(DAYS[1]! + 20 * H);
    await new Promise((r) => setTimeout(r, 200));
    expect(dsmGot.some((g) => g.topic.endsWith('/evt-c') && g.topic.includes('compliance'))).toBe(false);
    expect(agents.h1!.agent.outcomes.some((o) => o.eventId === 'evt-c' && o.kind === 'settlement')).toBe(
      false,
    );
    // The signed acceptance of a cancelled event is refused.
    const late = await signContent(
      'drAcceptance',
      { v: 1, eventId: 'evt-c', dsmId: 'x1', accepted: [] },
      dsmKey,
    );
    expect(await dsmSend(dsm, 'x1', topics.accept('x1', 'evt-c'), { jws: late })).toMatchObject({
      status: 'refused',
    });
  });

  it('cancel after settlement: credits reversed exactly by compensating lines, the statements show it', async () => {
    await raise(eventOn('evt-d', DAYS[2]!));
    await until('bids on evt-d', () => liveBids('evt-d').length === 2);
    await advanceTo(DAYS[2]! + 16 * H);
    await acceptAll('evt-d');
    await advanceTo(DAYS[2]! + 19 * H + 60_000);
    feed('h1', DAYS[2]! + 18 * H, 4, 100); // 400 Wh vs 1,000: 600 reduced, delivered
    feed('h2', DAYS[2]! + 18 * H, 4, 150); // 600 Wh: 400 of 600 reduced, keeps 666 per mille
    for (const m of METERS)
      await until(`${m} window readings`, () => stored(m, DAYS[2]! + 18 * H, DAYS[2]! + 19 * H) === 4);
    await advanceTo(DAYS[2]! + 19 * H + 31 * 60_000);
    await until('evt-d compliance', () => dsmGot.some((g) => g.topic === 'tre/v1/dsm/x1/compliance/evt-d'));
    // h2 gives back floor(180,000,000 x 334 / 1000) = 60,120,000.
    expect(drSum('evt-d', 'h1')).toBe(-180_000_000);
    expect(drSum('evt-d', 'h2')).toBe(-119_880_000);
    // The period with the event is stated: -180 and -119.88 (half-even -120) minor units.
    const billing = fx.tre.billing;
    await billing.closePeriod('s1', DAYS[2]!, DAYS[2]! + DAY);
    for (const m of METERS) await until(`${m} statement`, () => agents[m]!.agent.statements.length === 1);
    expect(agents.h1!.agent.statements[0]!.totalMinor).toBe(-180);
    expect(agents.h2!.agent.statements[0]!.totalMinor).toBe(-120);

    expect(
      await dsmSend(dsm, 'x1', topics.drCancel('x1', 'evt-d'), { jws: await cancelJws('evt-d') }),
    ).toMatchObject({ status: 'accepted', message: 'event cancelled' });
    expect(drSum('evt-d', 'h1')).toBe(0);
    expect(drSum('evt-d', 'h2')).toBe(0);
    expect(drLines('evt-d')).toEqual([
      { meter_id: 'h1', kind: 'dr-credit', ref: 'evt-d', amount_micro: -180_000_000 },
      { meter_id: 'h1', kind: 'dr-reversal', ref: 'evt-d:void', amount_micro: 180_000_000 },
      { meter_id: 'h2', kind: 'dr-credit', ref: 'evt-d', amount_micro: -180_000_000 },
      { meter_id: 'h2', kind: 'dr-reversal', ref: 'evt-d', amount_micro: 60_120_000 },
      { meter_id: 'h2', kind: 'dr-reversal', ref: 'evt-d:void', amount_micro: 119_880_000 },
    ]);
    for (const m of METERS)
      await until(`${m} cancellation outcome`, () =>
        agents[m]!.agent.outcomes.some((o) => o.eventId === 'evt-d' && o.kind === 'cancellation'),
      );
    expect(
      agents.h2!.agent.outcomes.find((o) => o.eventId === 'evt-d' && o.kind === 'cancellation'),
    ).toMatchObject({ outcome: 'cancelled', creditMicroMinor: 119_880_000 });
    // The compensating lines are stated in the next statement (the first one is not rewritten).
    await billing.closePeriod('s1', DAYS[2]! + DAY, DAYS[2]! + DAY + H);
    for (const m of METERS)
      await until(`${m} second statement`, () => agents[m]!.agent.statements.length === 2);
    expect(agents.h1!.agent.statements.map((s) => s.totalMinor)).toEqual([-180, 180]);
    expect(agents.h2!.agent.statements.map((s) => s.totalMinor)).toEqual([-120, 120]);
  });

  it('household override: loads back at once, settled as not delivered with no credit', async () => {
    await raise(eventOn('evt-e', DAYS[3]!));
    await until('bids on evt-e', () => liveBids('evt-e').length === 2);
    await advanceTo(DAYS[3]! + 16 * H);
    await acceptAll('evt-e');
    await advanceTo(DAYS[3]! + 18 * H + 15 * 60_000);
    expect(agents.h1!.io.level(17)).toBe(1);
    const before = agents.h1!.io.writes.length;
    const p = agents.h1!.agent.override('evt-e');
    expect(p).toMatchObject({ eventId: 'evt-e', status: 'overridden' });
    expect(agents.h1!.io.level(17)).toBe(0); // at once, before anything reached the TRE
    expect(agents.h1!.io.writes.length).toBeGreaterThan(before);
    expect(agents.h2!.io.level(17)).toBe(1); // the other household still sheds
    expect(() => agents.h1!.agent.override('evt-e')).toThrow(/no accepted bid/);
    await until('override recorded', () => liveBids('evt-e', 'overridden').length === 1);
    expect(dsmGot.some((g) => g.topic.endsWith('/evt-e') && g.topic.includes('compliance'))).toBe(false);
    await advanceTo(DAYS[3]! + 19 * H + 60_000);
    expect(agents.h1!.io.level(17)).toBe(0); // the cancelled restore timer did nothing more
    // h1 even used less (it would have counted as delivered): overridden is not delivered.
    feed('h1', DAYS[3]! + 18 * H, 4, 100);
    feed('h2', DAYS[3]! + 18 * H, 4, 100);
    for (const m of METERS)
      await until(`${m} window readings`, () => stored(m, DAYS[3]! + 18 * H, DAYS[3]! + 19 * H) === 4);
    await advanceTo(DAYS[3]! + 19 * H + 31 * 60_000);
    await until('evt-e compliance', () => dsmGot.some((g) => g.topic === 'tre/v1/dsm/x1/compliance/evt-e'));
    for (const m of METERS)
      await until(`${m} settled`, () =>
        agents[m]!.agent.outcomes.some((o) => o.eventId === 'evt-e' && o.kind === 'settlement'),
      );
    const settled = (m: string) =>
      agents[m]!.agent.outcomes.find((o) => o.eventId === 'evt-e' && o.kind === 'settlement');
    expect(settled('h1')).toMatchObject({ outcome: 'not-delivered', creditMicroMinor: CREDIT });
    expect(settled('h2')).toMatchObject({ outcome: 'delivered' });
    expect(drSum('evt-e', 'h1')).toBe(0);
    expect(drSum('evt-e', 'h2')).toBe(-180_000_000);
    const report = JSON.parse(dsmGot.find((g) => g.topic === 'tre/v1/dsm/x1/compliance/evt-e')!.payload) as {
      results: { delivered: boolean }[];
    };
    expect(report.results.map((r) => r.delivered).sort()).toEqual([false, true]);
    expect(proposalsOf('h1', 'evt-e')[0]).toMatchObject({ status: 'overridden' });
  });

  it('refuses a change by another DSM, by another party, for an unknown event', async () => {
    const otherKey = createPrivateKey(await readFile((await fx.issue('dsm', 'x2')).key));
    const x2 = await fx.connect('dsm', 'x2');
    await x2.subscribeAsync('tre/v1/dsm/x2/inbox/+', { qos: 1 });
    await raise(eventOn('evt-f', DAYS[3]! + DAY));
    // x2 cancelling x1's event, as itself: no such event of x2 (not even whether x1 has one).
    expect(
      await dsmSend(x2, 'x2', topics.drCancel('x2', 'evt-f'), {
        jws: await cancelJws('evt-f', otherKey, 'x2'),
      }),
    ).toMatchObject({ status: 'refused', reason: 'UNKNOWN_EVENT' });
    // x2 signing a cancel in x1's name.
    expect(
      await dsmSend(x2, 'x2', topics.drCancel('x2', 'evt-f'), {
        jws: await cancelJws('evt-f', otherKey, 'x1'),
      }),
    ).toMatchObject({ status: 'refused', reason: 'WRONG_SIGNER' });
    // x1's own signature sent by x2 on its topic: the signer is checked against the connection.
    expect(
      await dsmSend(x2, 'x2', topics.drCancel('x2', 'evt-f'), { jws: await cancelJws('evt-f') }),
    ).toMatchObject({ status: 'refused', reason: 'BAD_SIGNATURE' });
    // A household, or x2, publishing on x1's topic: the broker refuses the publish.
    const meter = await fx.connect('meter', 'h1');
    expect(await publishOutcome(meter, topics.drCancel('x1', 'evt-f'), '{}')).toBe('closed');
    expect(await publishOutcome(x2, topics.drCancel('x1', 'evt-f'), '{}')).toBe('closed');
    expect(
      await dsmSend(dsm, 'x1', topics.drCancel('x1', 'evt-nope'), { jws: await cancelJws('evt-nope') }),
    ).toMatchObject({ status: 'refused', reason: 'UNKNOWN_EVENT' });
    // A cancel whose issuedAt is not later than the last change of the event: a replay.
    const first = issuedAt();
    expect(
      await dsmSend(dsm, 'x1', topics.drModify('x1', 'evt-f'), {
        jws: await modifyJws('evt-f', { requestedReductionWh: 1_000 }, issuedAt()),
      }),
    ).toMatchObject({ status: 'accepted' });
    expect(
      await dsmSend(dsm, 'x1', topics.drCancel('x1', 'evt-f'), {
        jws: await cancelJws('evt-f', dsmKey, 'x1', first),
      }),
    ).toMatchObject({ status: 'refused', reason: 'REPLAYED' });
    expect(
      fx.tre.store.db
        .prepare("SELECT stage, revision, cancelled FROM dr_events WHERE event_id = 'evt-f'")
        .get(),
    ).toEqual({ stage: 'open', revision: 1, cancelled: 0 });
  });

  it('the DSM never received a household identifier; its change receipts are fixed texts', () => {
    const all = [
      ...dsmGot.map((g) => `${g.topic} ${g.payload}`),
      ...dsmReceipts.map((r) => JSON.stringify(r)),
    ].join('\n');
    for (const secret of [...METERS, 'bid-h', 'acc-h']) expect(all).not.toContain(secret);
    const changes = dsmReceipts.filter((r) => r.family === 'cancel' || r.family === 'modify');
    for (const r of changes.filter((c) => c.status === 'accepted' && !c.duplicate))
      expect(r.message).toMatch(/^(event cancelled|event modified \(revision \d+\))$/);
  });
});
