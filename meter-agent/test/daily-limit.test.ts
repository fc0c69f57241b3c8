/**
 * The per-day limit acts per day: the household agent (TRE-signed events and outcomes, verified)
 * passes the policy what it already committed on the event's local day, from its own proposals
 * and their outcomes, so a second event on the same day gets only what the limit leaves. The day
 * is the policy's (meter.timeZone), not UTC's; a restart keeps it (status.json).
 */
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePolicy } from '@tre/hems-policy';
import {
  type DrEvent,
  type DrOutcome,
  drOutcomeTree,
  ManualClock,
  PROTOCOL_VERSION,
  signContent,
  topics,
} from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { describe, expect, it } from 'vitest';
import { Bidder, committedOnDayOf } from '../src/bidder.js';
import {
  type BidProposal,
  HouseholdAgent,
  type Proposal,
  previousProposals,
} from '../src/household-agent.js';
import type { TreLink } from '../src/tre-link.js';

/** 3 kWh an event, 5 kWh a day; the heat pump alone could shed 4 kWh in an hour. */
const policy = parsePolicy(
  `mode: auto-bid
minPricePerMWh: 20000
maxReductionWh:
  perEvent: 3000
  perDay: 5000
loads:
  - name: heat-pump
    typicalPowerW: 4000
    actuator: relay:5
    maxOffMinutes: 120
    allowedWindows:
      - from: "00:00"
        to: "24:00"
`,
  'policy.yaml',
);
const TIME_ZONE = 'Europe/Amsterdam'; // UTC+1 in January
const T0 = Date.parse('2026-01-14T06:00:00.000Z');

/** A one-hour event starting at `start` (UTC), bids until an hour before. */
function event(eventId: string, start: string): DrEvent {
  const ms = Date.parse(start);
  return {
    v: 1,
    eventId,
    dsmId: 'dsm-1',
    windowStart: new Date(ms).toISOString(),
    windowEnd: new Date(ms + 3_600_000).toISOString(),
    bidDeadline: new Date(ms - 3_600_000).toISOString(),
    acceptBy: new Date(ms - 1_800_000).toISOString(),
    requestedReductionWh: 10_000,
    priceCapPerMWh: 300_000,
  };
}

async function tre() {
  const dir = await mkdtemp(join(tmpdir(), 'daily-limit-'));
  await CertificateAuthority.initForDevelopment(join(dir, 'pki'));
  return {
    dir,
    key: createPrivateKey(await readFile(join(dir, 'pki', 'tre.key'))),
    certificate: new X509Certificate(await readFile(join(dir, 'pki', 'tre.crt'))),
  };
}

/** A household agent on a link that records what it sends, bidding through the real bidder. */
function household(signer: Awaited<ReturnType<typeof tre>>, proposals?: Proposal[]) {
  const sent: { eventId: string; quantityWh: number; bidId: string }[] = [];
  const link = Object.assign(new EventEmitter(), {
    me: { role: 'meter', id: 'h1' },
    treCertificate: signer.certificate,
    state: 'trusted',
    outboxDepth: 0,
    enqueue: (_key: string, _topic: string, body: { eventId: string; quantityWh: number; bidId: string }) =>
      sent.push({ eventId: body.eventId, quantityWh: body.quantityWh, bidId: body.bidId }),
  }) as unknown as TreLink;
  const clock = new ManualClock(T0);
  const bidder = new Bidder({ policy, timeZone: TIME_ZONE, clock });
  const decisions: BidProposal[] = [];
  let n = 0;
  const agent = new HouseholdAgent({
    link,
    clock,
    stateDir: signer.dir,
    mode: 'auto-bid',
    randomId: () => `bid-${String(++n).padStart(7, '0')}-${proposals ? 'b' : 'a'}`,
    propose: (e, committed) => {
      const decision = bidder.propose(e, committed);
      decisions.push(decision);
      return decision;
    },
    ...(proposals ? { proposals } : {}),
  });
  const announce = async (e: DrEvent) => {
    const jws = await signContent('drAnnouncement', { v: 1, event: e, expiresAt: e.bidDeadline }, signer.key);
    link.emit('message', topics.broadcastDrEvent(e.eventId), Buffer.from(JSON.stringify({ v: 1, jws })));
    await agent.idle();
  };
  /** The TRE's acceptance round for this household's bid (one signed root, two leaves). */
  const outcome = async (eventId: string, outcomeOf: 'accepted' | 'not-accepted') => {
    const bid = sent.find((s) => s.eventId === eventId)!;
    const leaf = (meterId: string, bidId: string): DrOutcome => ({
      v: 1,
      eventId,
      kind: 'acceptance',
      meterId,
      bidId,
      outcome: outcomeOf,
      salt: randomBytes(16).toString('base64url'),
    });
    const leaves = [leaf('h1', bid.bidId), leaf('h2', 'bid-of-another')];
    const tree = drOutcomeTree(leaves);
    const jws = await signContent(
      'drOutcome',
      {
        v: 1,
        eventId,
        kind: 'acceptance',
        root: tree.root,
        leafCount: tree.leafCount,
        issuedAt: new Date(clock.now()).toISOString(),
      },
      signer.key,
    );
    const notice = { v: PROTOCOL_VERSION, outcome: leaves[0], proof: tree.proof(0), jws };
    link.emit(
      'message',
      topics.inbox({ role: 'meter', id: 'h1' }, 'dr-outcome'),
      Buffer.from(JSON.stringify(notice)),
    );
    await agent.idle();
  };
  const bidOf = (eventId: string) => sent.filter((s) => s.eventId === eventId).map((s) => s.quantityWh);
  return { agent, clock, sent, decisions, announce, outcome, bidOf };
}

describe('committed energy today', () => {
  it('a second event on the same local day gets what the daily limit leaves; a refused bid frees it; the next local day starts afresh', async () => {
    const h = household(await tre());
    await h.announce(event('e1', '2026-01-14T09:00:00Z'));
    expect(h.bidOf('e1')).toEqual([3000]); // the per-event maximum
    await h.outcome('e1', 'accepted');
    expect(h.agent.status().proposals[0]).toMatchObject({ eventId: 'e1', status: 'accepted' });

    await h.announce(event('e2', '2026-01-14T12:00:00Z'));
    expect(h.bidOf('e2')).toEqual([2000]); // 5000 a day - 3000 accepted
    await h.outcome('e2', 'not-accepted'); // refused: it commits nothing

    await h.announce(event('e3', '2026-01-14T15:00:00Z'));
    expect(h.bidOf('e3')).toEqual([2000]); // still 5000 - 3000; this one stays open (no outcome yet)

    // A bid awaiting its outcome counts too: nothing is left on this day.
    await h.announce(event('e4', '2026-01-14T18:00:00Z'));
    expect(h.bidOf('e4')).toEqual([]);
    expect(h.decisions.at(-1)).toEqual({
      reason: '5000 Wh already committed on 2026-01-14; the daily maximum is 5000 Wh',
    });

    // 23:30 UTC on the 14th is 00:30 on the 15th in Amsterdam: a new local day (a UTC day would refuse it).
    await h.announce(event('e5', '2026-01-14T23:30:00Z'));
    expect(h.bidOf('e5')).toEqual([3000]);
    expect(h.sent).toHaveLength(4);
  });

  it('the day is local midnight to midnight in the policy’s time zone', () => {
    const committed = [
      { windowStart: '2026-01-13T22:59:00.000Z', quantityWh: 1 }, // 23:59 on the 13th in Amsterdam
      { windowStart: '2026-01-13T23:00:00.000Z', quantityWh: 10 }, // 00:00 on the 14th
      { windowStart: '2026-01-14T22:59:00.000Z', quantityWh: 100 }, // 23:59 on the 14th
      { windowStart: '2026-01-14T23:00:00.000Z', quantityWh: 1000 }, // 00:00 on the 15th
    ];
    expect(committedOnDayOf('2026-01-14T12:00:00.000Z', committed, TIME_ZONE)).toBe(110);
    expect(committedOnDayOf('2026-01-14T12:00:00.000Z', committed, 'UTC')).toBe(1100); // 23:00 UTC on the 14th is still the 14th in UTC
    expect(committedOnDayOf('2026-01-14T23:30:00.000Z', committed, TIME_ZONE)).toBe(1000);
  });

  it('after a restart the day’s bids still count (status.json), and an event is not bid on twice', async () => {
    const signer = await tre();
    const before = household(signer);
    await before.announce(event('e1', '2026-01-14T09:00:00Z'));
    await before.outcome('e1', 'accepted');
    before.agent.stop();

    const after = household(signer, previousProposals(signer.dir));
    expect(after.agent.committedBids()).toEqual([
      { windowStart: '2026-01-14T09:00:00.000Z', quantityWh: 3000 },
    ]);
    await after.announce(event('e1', '2026-01-14T09:00:00Z')); // the retained announcement, again
    expect(after.sent).toEqual([]);
    await after.announce(event('e2', '2026-01-14T12:00:00Z'));
    expect(after.bidOf('e2')).toEqual([2000]);
  });
});
