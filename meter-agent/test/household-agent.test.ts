/**
 * The household agent on its own: TRE-signed messages are verified before they count, an accepted
 * bid sheds the named loads for its window and restores them after (johnny-five over a mock IO:
 * no GPIO on this machine), an actuator this box cannot drive is counted, never fatal.
 */
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoadSwitch, MockIo } from '@tre/hardware';
import {
  type DrEvent,
  type DrOutcome,
  type DrOutcomeKind,
  drOutcomeTree,
  ManualClock,
  PROTOCOL_VERSION,
  signContent,
  topics,
} from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { describe, expect, it } from 'vitest';
import { AGENT_HISTORY, HouseholdAgent, type Proposal } from '../src/household-agent.js';
import type { TreLink } from '../src/tre-link.js';

const T0 = Date.UTC(2026, 3, 1, 12);

type OutcomeOf = Pick<DrOutcome, 'eventId' | 'bidId' | 'outcome' | 'creditMicroMinor'> & {
  kind?: DrOutcomeKind;
  meterId?: string;
};

/**
 * A round as the TRE notifies it: one signed root over the leaves of this household (`h1`) and of
 * `others` more households; returns each household's notice (this household's first).
 */
async function signedRound(mine: OutcomeOf, key: ReturnType<typeof createPrivateKey>, others = 3) {
  const kind = mine.kind ?? (mine.outcome.endsWith('accepted') ? 'acceptance' : 'settlement');
  const leaf = (o: OutcomeOf): DrOutcome => ({
    v: 1,
    kind,
    meterId: 'h1',
    ...o,
    salt: randomBytes(16).toString('base64url'),
  });
  const leaves = [
    leaf(mine),
    ...Array.from({ length: others }, (_, i) =>
      leaf({
        eventId: mine.eventId,
        meterId: `other${i}`,
        bidId: `bid-other-${i}`,
        outcome: kind === 'acceptance' ? 'accepted' : 'delivered',
        creditMicroMinor: -1_000,
      }),
    ),
  ];
  const tree = drOutcomeTree(leaves);
  const jws = await signContent(
    'drOutcome',
    {
      v: 1,
      eventId: mine.eventId,
      kind,
      root: tree.root,
      leafCount: tree.leafCount,
      issuedAt: new Date(T0).toISOString(),
    },
    key,
  );
  return leaves.map((outcome, i) => ({ v: PROTOCOL_VERSION, outcome, proof: tree.proof(i), jws }));
}

async function setup(restored: Proposal[] = []) {
  const dir = await mkdtemp(join(tmpdir(), 'agent-'));
  await CertificateAuthority.initForDevelopment(join(dir, 'pki'));
  const treKey = createPrivateKey(await readFile(join(dir, 'pki', 'tre.key')));
  const treCertificate = new X509Certificate(await readFile(join(dir, 'pki', 'tre.crt')));
  const sent: { key: string; topic: string; body: Record<string, unknown> }[] = [];
  const link = Object.assign(new EventEmitter(), {
    me: { role: 'meter', id: 'h1' },
    treCertificate,
    state: 'trusted',
    outboxDepth: 0,
    enqueue: (key: string, topic: string, body: Record<string, unknown>) => sent.push({ key, topic, body }),
  }) as unknown as TreLink;
  const clock = new ManualClock(T0);
  const io = new MockIo();
  const loads = await LoadSwitch.open(io);
  const logged: string[] = [];
  const agent = new HouseholdAgent({
    log: (line) => logged.push(line),
    link,
    clock,
    stateDir: dir,
    mode: 'auto-bid',
    loads,
    randomId: () => 'bid-0000001',
    proposals: restored,
    propose: (event) => ({
      bid: {
        quantityWh: 500,
        pricePerMWh: 100_000,
        loads: [
          { name: 'ev', actuator: 'relay:17', from: event.windowStart, to: event.windowEnd },
          { name: 'laundry', actuator: 'plug:laundry', from: event.windowStart, to: event.windowEnd },
        ],
      },
    }),
  });
  const deliver = async (
    topic: string,
    type: Parameters<typeof signContent>[0],
    body: unknown,
    key = treKey,
  ) => {
    link.emit(
      'message',
      topic,
      Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, jws: await signContent(type, body, key) })),
    );
    await agent.idle();
  };
  const outcomeTopic = topics.inbox({ role: 'meter', id: 'h1' }, 'dr-outcome');
  /** Delivers a raw notice on this household's dr-outcome inbox. */
  const deliverNotice = async (notice: unknown) => {
    link.emit('message', outcomeTopic, Buffer.from(JSON.stringify(notice)));
    await agent.idle();
  };
  /** This household's notice of a TRE-signed round. */
  const deliverOutcome = async (mine: OutcomeOf) => deliverNotice((await signedRound(mine, treKey))[0]);
  return { agent, clock, io, sent, deliver, deliverNotice, deliverOutcome, treKey, logged, dir };
}

const event: DrEvent = {
  v: 1,
  eventId: 'e1',
  dsmId: 'x',
  windowStart: new Date(T0 + 3_600_000).toISOString(),
  windowEnd: new Date(T0 + 7_200_000).toISOString(),
  bidDeadline: new Date(T0 + 1_800_000).toISOString(),
  acceptBy: new Date(T0 + 2_700_000).toISOString(),
  requestedReductionWh: 1000,
  priceCapPerMWh: 300_000,
};

/** An accepted bid as `status.json` keeps it (for a restarted agent), shedding `relay:<relay>` from `fromMs` to `toMs`. */
function accepted(bidId: string, relay: number, fromMs: number, toMs: number): Proposal {
  const at = (ms: number) => new Date(ms).toISOString();
  return {
    bidId,
    eventId: `ev-${bidId}`,
    windowStart: at(fromMs),
    bidDeadline: at(fromMs - 1_800_000),
    quantityWh: 500,
    pricePerMWh: 100_000,
    loads: [{ name: 'ev', actuator: `relay:${relay}`, from: at(fromMs), to: at(toMs) }],
    status: 'accepted',
  };
}

describe('household agent', () => {
  it('bids on a verified event, sheds on acceptance for the window, restores after', async () => {
    const { agent, clock, io, sent, deliver, deliverOutcome } = await setup();
    await deliver(topics.broadcastDrEvent('e1'), 'drAnnouncement', {
      v: 1,
      event,
      expiresAt: event.bidDeadline,
    });
    expect(sent.map((s) => [s.key, s.topic])).toEqual([['bid:bid-0000001', topics.bid('h1')]]);
    await deliverOutcome({
      eventId: 'e1',
      bidId: 'bid-0000001',
      outcome: 'accepted',
      creditMicroMinor: -50_000_000,
    });
    expect(agent.outcomes).toMatchObject([
      { eventId: 'e1', outcome: 'accepted', creditMicroMinor: -50_000_000 },
    ]);
    expect(io.writes.filter(([p]) => p === 17)).toEqual([]);
    clock.advance(3_600_000); // window starts
    expect(io.level(17)).toBe(1);
    clock.advance(3_600_000); // window ends
    expect(io.level(17)).toBe(0);
    expect(agent.actuatorFailures).toBe(2); // plug:laundry cannot be driven here: counted, not fatal
    expect(agent.status().proposals[0]).toMatchObject({ status: 'accepted' });
    // The release that wrote the status, as `meter-agent status` shows it.
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    expect(agent.status().version).toBe(pkg.version);
  });

  it('after a restart, an accepted shed still to come is armed again; one that is over is left alone', async () => {
    const { clock, io } = await setup([
      accepted('b-next', 17, T0 + 3_600_000, T0 + 7_200_000),
      accepted('b-over', 18, T0 - 7_200_000, T0 - 3_600_000),
    ]);
    clock.advance(3_600_000); // the restored window starts
    expect(io.level(17)).toBe(1);
    clock.advance(3_600_000);
    expect(io.level(17)).toBe(0);
    expect(io.writes.filter(([p]) => p === 18)).toEqual([]);
  });

  it('the home override button ends every accepted shed under way or to come, and only those', async () => {
    const { agent, clock, io, sent } = await setup([
      accepted('now', 17, T0 + 3_600_000, T0 + 7_200_000),
      accepted('later', 18, T0 + 4 * 3_600_000, T0 + 5 * 3_600_000),
      accepted('over', 19, T0 - 7_200_000, T0 - 3_600_000),
    ]);
    clock.advance(3_600_000 + 60_000); // shedding relay 17
    expect(io.level(17)).toBe(1);
    expect(agent.overrideActive().sort()).toEqual(['ev-later', 'ev-now']);
    expect(io.level(17)).toBe(0); // restored at once
    expect(sent.map((s) => s.key).sort()).toEqual(['override:later', 'override:now']);
    clock.advance(4 * 3_600_000); // the later window passes: nothing is shed
    expect(io.writes.filter(([p]) => p === 18)).toEqual([]);
    expect(agent.status().proposals.map((p) => [p.bidId, p.status])).toEqual([
      ['now', 'overridden'],
      ['later', 'overridden'],
      ['over', 'accepted'],
    ]);
    expect(agent.overrideActive()).toEqual([]);
  });

  it('ignores content not signed by its TRE', async () => {
    const { agent, sent, deliver, dir } = await setup();
    const other = await CertificateAuthority.initForDevelopment(join(dir, 'other'));
    const forgedKey = createPrivateKey(await readFile(join(dir, 'other', 'tre.key')));
    expect(other).toBeTruthy();
    await deliver(
      topics.broadcastDrEvent('e1'),
      'drAnnouncement',
      { v: 1, event, expiresAt: event.bidDeadline },
      forgedKey,
    );
    expect(sent).toEqual([]);
    expect(agent.rejected.signatures).toBe(1);
  });

  it('a long-running agent keeps only its most recent outcomes (memory stays bounded)', async () => {
    const { agent, deliverOutcome } = await setup();
    for (let i = 1; i <= AGENT_HISTORY + 5; i++)
      await deliverOutcome({
        eventId: `e${i}`,
        bidId: `bid-${String(i).padStart(7, '0')}`,
        outcome: 'not-accepted',
      });
    expect(agent.outcomes).toHaveLength(AGENT_HISTORY);
    expect(agent.outcomes[0]!.eventId).toBe('e6');
    expect(agent.outcomes.at(-1)!.eventId).toBe(`e${AGENT_HISTORY + 5}`);
  });
  it('batched outcomes: one root verification per round; a resent notice counts once', async () => {
    const { agent, deliverNotice, treKey } = await setup();
    const [notice] = await signedRound(
      { eventId: 'e1', bidId: 'bid-0000001', outcome: 'not-accepted' },
      treKey,
    );
    await deliverNotice(notice);
    await deliverNotice(notice); // a QoS 1 redelivery
    expect(agent.outcomes).toHaveLength(1);
    expect(agent.outcomeVerifier.stats.rootVerifications).toBe(1);
    expect(agent.rejected.signatures).toBe(0);
  });

  it('refuses batched outcomes that are not its own or not signed by its TRE, and logs no household id', async () => {
    const { agent, io, deliver, deliverNotice, treKey, logged, dir } = await setup();
    await deliver(topics.broadcastDrEvent('e1'), 'drAnnouncement', {
      v: 1,
      event,
      expiresAt: event.bidDeadline,
    });
    await CertificateAuthority.initForDevelopment(join(dir, 'other'));
    const forgedKey = createPrivateKey(await readFile(join(dir, 'other', 'tre.key')));
    const accepted = {
      eventId: 'e1',
      bidId: 'bid-0000001',
      outcome: 'accepted',
      creditMicroMinor: -50_000_000,
    } as const;
    const round = await signedRound(accepted, treKey);
    const mine = round[0]!;
    const flipped = mine.proof.siblings[0]!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
    const e2 = await signedRound({ ...accepted, eventId: 'e2' }, treKey);
    const attempts = [
      // a tampered proof
      { ...mine, proof: { ...mine.proof, siblings: [flipped, ...mine.proof.siblings.slice(1)] } },
      // a proof for another household (its notice, forwarded)
      round[1],
      // the same outcome, signed by another key
      (await signedRound(accepted, forgedKey))[0],
      // a leaf for another event under this round's signed root
      { ...e2[0]!, jws: mine.jws },
      // a valid round of e2 naming this household's bid for e1
      e2[0],
    ];
    for (const notice of attempts) await deliverNotice(notice);
    expect(agent.rejected.signatures).toBe(attempts.length);
    expect(agent.outcomes).toEqual([]);
    expect(agent.status().proposals[0]).toMatchObject({ status: 'bid' });
    expect(io.writes).toEqual([]);
    expect(logged.map((l) => l.split(':').slice(0, 2).join(':'))).toEqual([
      'DR outcome refused: BAD_PROOF',
      'DR outcome refused: OTHER_HOUSEHOLD',
      'DR outcome refused: BAD_ROOT_SIGNATURE',
      'DR outcome refused: OTHER_ROUND',
      'DR outcome refused: OTHER_ROUND',
    ]);
    for (const line of logged) expect(line).not.toMatch(/h1|other\d|bid-/);
    // Its own notice still counts.
    await deliverNotice(mine);
    expect(agent.status().proposals[0]).toMatchObject({ status: 'accepted' });
  });
});
