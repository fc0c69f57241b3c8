/**
 * The household agent on its own: TRE-signed messages are verified before they count, an accepted
 * bid sheds the named loads for its window and restores them after (johnny-five over a mock IO:
 * no GPIO on this machine), an actuator this box cannot drive is counted, never fatal.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoadSwitch, MockIo } from '@tre/hardware';
import { type DrEvent, ManualClock, PROTOCOL_VERSION, signContent, topics } from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { describe, expect, it } from 'vitest';
import { AGENT_HISTORY, HouseholdAgent } from '../src/household-agent.js';
import type { TreLink } from '../src/tre-link.js';

const T0 = Date.UTC(2026, 3, 1, 12);

async function setup() {
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
  const agent = new HouseholdAgent({
    link,
    clock,
    stateDir: dir,
    mode: 'auto-bid',
    loads,
    randomId: () => 'bid-0000001',
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
    await new Promise((r) => setTimeout(r, 20));
  };
  return { agent, clock, io, sent, deliver, dir };
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

describe('household agent', () => {
  it('bids on a verified event, sheds on acceptance for the window, restores after', async () => {
    const { agent, clock, io, sent, deliver } = await setup();
    await deliver(topics.broadcastDrEvent('e1'), 'drAnnouncement', {
      v: 1,
      event,
      expiresAt: event.bidDeadline,
    });
    expect(sent.map((s) => [s.key, s.topic])).toEqual([['bid:bid-0000001', topics.bid('h1')]]);
    await deliver(topics.inbox({ role: 'meter', id: 'h1' }, 'dr-outcome'), 'drOutcome', {
      v: 1,
      eventId: 'e1',
      bidId: 'bid-0000001',
      outcome: 'accepted',
      creditMicroMinor: -50_000_000,
    });
    expect(io.writes.filter(([p]) => p === 17)).toEqual([]);
    clock.advance(3_600_000); // window starts
    expect(io.level(17)).toBe(1);
    clock.advance(3_600_000); // window ends
    expect(io.level(17)).toBe(0);
    expect(agent.actuatorFailures).toBe(2); // plug:laundry cannot be driven here: counted, not fatal
    expect(agent.status().proposals[0]).toMatchObject({ status: 'accepted' });
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
    const { agent, deliver } = await setup();
    for (let i = 1; i <= AGENT_HISTORY + 5; i++)
      await deliver(topics.inbox({ role: 'meter', id: 'h1' }, 'dr-outcome'), 'drOutcome', {
        v: 1,
        eventId: `e${i}`,
        bidId: `bid-${String(i).padStart(7, '0')}`,
        outcome: 'not-accepted',
      });
    expect(agent.outcomes).toHaveLength(AGENT_HISTORY);
    expect(agent.outcomes[0]!.eventId).toBe('e6');
    expect(agent.outcomes.at(-1)!.eventId).toBe(`e${AGENT_HISTORY + 5}`);
  });
});
