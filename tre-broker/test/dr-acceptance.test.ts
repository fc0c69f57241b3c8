/**
 * Attacks on the DSM's acceptance, through the TRE's real flows (in process): an unsigned or
 * forged acceptance, a late one (after acceptBy, after the window), a replayed or reordered one
 * (a second acceptance, sequential or concurrent; one before the release; one for another event).
 * Each is refused with a reason and leaves the ledger and the bids as the one valid acceptance
 * made them.
 */
import { type Acceptance, type PseudoBids, signContent, topics } from '@tre/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import { flowContext } from './support/flow-context.js';

const T0 = Date.UTC(2026, 6, 1, 8);
const MIN = 60_000;
let f: ReturnType<typeof flowContext>;
afterEach(() => f?.close());

/** A round with two bids (households a, b), released at T0 + 1 min, acceptBy T0 + 30 min, window +2 h..+3 h. */
async function releasedRound(eventId = 'e1') {
  f = flowContext(T0);
  f.flows();
  await f.ctx.registry.upsert(
    ['a', 'b'].map((m) => ({
      meterId: m,
      supplierId: 's',
      dnoId: 'd',
      capacityW: 8_000,
      account: `acct-${m}`,
    })),
  );
  const dsm = f.party({ role: 'dsm', id: 'x' });
  const event = {
    v: 1,
    eventId,
    dsmId: 'x',
    windowStart: new Date(T0 + 120 * MIN).toISOString(),
    windowEnd: new Date(T0 + 180 * MIN).toISOString(),
    bidDeadline: new Date(T0 + MIN).toISOString(),
    acceptBy: new Date(T0 + 30 * MIN).toISOString(),
    requestedReductionWh: 300,
    priceCapPerMWh: 1_000,
  };
  expect(
    await dsm.send(topics.drEvent('x'), {
      v: 1,
      requestId: 'ev',
      jws: await signContent('drEvent', event, dsm.privateKey),
    }),
  ).toMatchObject({ status: 'accepted' });
  for (const [m, q] of [
    ['a', 100],
    ['b', 200],
  ] as const)
    await f.party({ role: 'meter', id: m }).send(topics.bid(m), {
      v: 1,
      requestId: `bid-${m}`,
      bidId: `bid-${m}-xxxxxx`,
      eventId,
      quantityWh: q,
      pricePerMWh: 500,
    });
  const early = await dsm.send(topics.accept('x', eventId), await envelope(dsm, eventId, []));
  f.clock.advance(MIN);
  const bidsTopic = topics.pseudoBids('x', eventId);
  while (!f.published.some((p) => p.topic === bidsTopic)) await new Promise((r) => setImmediate(r));
  const bids = JSON.parse(f.published.find((p) => p.topic === bidsTopic)!.payload) as PseudoBids;
  const pseudonymOf = (q: number) => bids.bids.find((b) => b.quantityWh === q)!.pseudonym;
  return { dsm, bids, early, pseudonymOf };
}

type Dsm = ReturnType<ReturnType<typeof flowContext>['party']>;

async function envelope(dsm: Dsm, eventId: string, accepted: string[], requestId = 'acc', dsmId = 'x') {
  const acceptance: Acceptance = { v: 1, eventId, dsmId, accepted };
  return { v: 1, requestId, jws: await signContent('drAcceptance', acceptance, dsm.privateKey) };
}

const credits = () =>
  f.ctx.store.db
    .prepare("SELECT meter_id, amount_micro FROM ledger WHERE kind = 'dr-credit' ORDER BY meter_id")
    .all();
const statuses = () =>
  f.ctx.store.db.prepare('SELECT meter_id, status FROM dr_bids ORDER BY meter_id').all() as {
    meter_id: string;
    status: string;
  }[];
const dsmReceipts = () =>
  f.published.filter((p) => p.topic === 'tre/v1/dsm/x/inbox/receipt').map((p) => JSON.parse(p.payload));

describe('signed acceptance', () => {
  it('the valid one: accepted, recorded with its signature, receipt names only what the DSM sent', async () => {
    const { dsm, pseudonymOf } = await releasedRound();
    const body = await envelope(dsm, 'e1', [pseudonymOf(100)]);
    expect(await dsm.send(topics.accept('x', 'e1'), body)).toEqual({
      v: 1,
      family: 'accept',
      status: 'accepted',
      requestId: 'acc',
      message: 'acceptance recorded',
    });
    expect(credits()).toEqual([{ meter_id: 'a', amount_micro: -50_000 }]);
    expect(f.ctx.store.db.prepare('SELECT acceptance_jws FROM dr_events').get()).toEqual({
      acceptance_jws: body.jws,
    });
  });

  // Fails on the old code: it took the unsigned {requestId, eventId, accepted} and credited it.
  it('attack: an unsigned acceptance is refused and changes nothing', async () => {
    const { dsm, pseudonymOf } = await releasedRound();
    const unsigned = { v: 1, requestId: 'u', eventId: 'e1', accepted: [pseudonymOf(100)] };
    expect(await dsm.send(topics.accept('x', 'e1'), unsigned)).toMatchObject({
      status: 'refused',
      reason: 'MALFORMED',
    });
    expect(credits()).toEqual([]);
    expect(statuses().map((b) => b.status)).toEqual(['live', 'live']);
  });

  it('attack: forged, wrongly typed or naming another DSM: refused', async () => {
    const { dsm, pseudonymOf } = await releasedRound();
    const other = f.party({ role: 'dsm', id: 'x' }); // same id, another key: not the certificate's
    expect(
      await dsm.send(topics.accept('x', 'e1'), await envelope(other, 'e1', [pseudonymOf(100)])),
    ).toMatchObject({ reason: 'BAD_SIGNATURE' });
    const asEvent = await signContent(
      'drEvent',
      { v: 1, eventId: 'e1', dsmId: 'x', accepted: [pseudonymOf(100)] },
      dsm.privateKey,
    );
    expect(await dsm.send(topics.accept('x', 'e1'), { v: 1, requestId: 't', jws: asEvent })).toMatchObject({
      reason: 'BAD_SIGNATURE',
      message: /expected signed drAcceptance/,
    });
    expect(
      await dsm.send(topics.accept('x', 'e1'), await envelope(dsm, 'e1', [pseudonymOf(100)], 'w', 'y')),
    ).toMatchObject({ reason: 'WRONG_SIGNER' });
    expect(credits()).toEqual([]);
  });

  // Fails on the old code: after the window had closed the acceptance was still taken and credited.
  it('attack: a late acceptance (after acceptBy; after the window) is refused with the deadline', async () => {
    const { dsm, pseudonymOf } = await releasedRound();
    f.clock.advance(T0 + 30 * MIN - f.clock.now()); // exactly acceptBy
    expect(await dsm.send(topics.accept('x', 'e1'), await envelope(dsm, 'e1', [pseudonymOf(100)]))).toEqual({
      v: 1,
      family: 'accept',
      status: 'refused',
      requestId: 'acc',
      reason: 'ACCEPTANCE_DEADLINE_PASSED',
      message: `the acceptance deadline (acceptBy ${new Date(T0 + 30 * MIN).toISOString()}) has passed; no bid of this event can be accepted`,
    });
    f.clock.advance(4 * 60 * MIN); // the window has closed
    expect(
      await dsm.send(topics.accept('x', 'e1'), await envelope(dsm, 'e1', [pseudonymOf(200)], 'late2')),
    ).toMatchObject({ reason: 'ACCEPTANCE_DEADLINE_PASSED' });
    expect(credits()).toEqual([]);
    expect(statuses().map((b) => b.status)).toEqual(['live', 'live']);
  });

  // Fails on the old code: two acceptances in flight together (two sessions of the DSM, or a
  // resend racing the original) were both taken: both households were told "accepted", and
  // the credit of the first stayed in the ledger although its bid ended "rejected".
  it('attack: a replayed acceptance (concurrent or later, other content) is REPLAYED; an identical resend a duplicate', async () => {
    const { dsm, pseudonymOf } = await releasedRound();
    const first = await envelope(dsm, 'e1', [pseudonymOf(100)], 'r1');
    const second = await envelope(dsm, 'e1', [pseudonymOf(200)], 'r2');
    await Promise.all([
      dsm.send(topics.accept('x', 'e1'), first),
      dsm.send(topics.accept('x', 'e1'), second),
    ]);
    const [r1, r2] = ['r1', 'r2'].map((id) => dsmReceipts().find((r) => r.requestId === id));
    // Which of the two is taken depends on which signature check finishes first; exactly one is.
    const firstWon = r1?.status === 'accepted';
    const [won, lost] = firstWon ? [r1, r2] : [r2, r1];
    const [winner, loser] = firstWon ? [first, second] : [second, first];
    const credit = firstWon
      ? [{ meter_id: 'a', amount_micro: -50_000 }]
      : [{ meter_id: 'b', amount_micro: -100_000 }];
    expect(won).toMatchObject({ status: 'accepted' });
    expect(lost).toMatchObject({
      status: 'refused',
      reason: 'REPLAYED',
      message: 'this event was already accepted; its pseudonyms are dead',
    });
    expect(credits()).toEqual(credit);
    expect(statuses()).toEqual([
      { meter_id: 'a', status: firstWon ? 'accepted' : 'rejected' },
      { meter_id: 'b', status: firstWon ? 'rejected' : 'accepted' },
    ]);
    const outcomes = f.published.filter((p) => p.topic.endsWith('/inbox/dr-outcome'));
    expect(outcomes).toHaveLength(2); // one per household, once
    expect(await dsm.send(topics.accept('x', 'e1'), loser)).toMatchObject({ reason: 'REPLAYED' });
    expect(await dsm.send(topics.accept('x', 'e1'), winner)).toMatchObject({
      status: 'accepted',
      duplicate: true,
    });
    expect(credits()).toEqual(credit);
  });

  it('attack: a reordered acceptance (before the release; on another event) is refused', async () => {
    const { dsm, early, pseudonymOf } = await releasedRound();
    expect(early).toMatchObject({ reason: 'EVENT_INVALID', message: /not been released yet/ });
    const forE1 = await envelope(dsm, 'e1', [pseudonymOf(100)]);
    expect(await dsm.send(topics.accept('x', 'e2'), forE1)).toMatchObject({
      reason: 'MALFORMED',
      message: /names another event than its topic/,
    });
    expect(credits()).toEqual([]);
  });

  it('what the DSM is told never depends on households', async () => {
    const { dsm, pseudonymOf } = await releasedRound();
    await dsm.send(topics.accept('x', 'e1'), await envelope(dsm, 'e1', [pseudonymOf(100), 'A'.repeat(22)]));
    await dsm.send(topics.accept('x', 'e1'), await envelope(dsm, 'e1', [pseudonymOf(100)]));
    const toDsm = f.published
      .filter((p) => p.topic.startsWith('tre/v1/dsm/x/'))
      .map((p) => p.payload)
      .join('\n');
    for (const secret of ['"a"', '"b"', 'acct-', 'bid-a', 'bid-b', '2 bids', 'of 2'])
      expect(toDsm).not.toContain(secret);
    expect(dsmReceipts().map((r) => r.message)).toEqual([
      'event e1 announced',
      'the bids have not been released yet; accept after the bids message',
      `pseudonym ${'A'.repeat(22)} is not in this event's bids message; accept only pseudonyms released for it`,
      'acceptance recorded',
    ]);
  });
});
