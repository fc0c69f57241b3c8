/**
 * `dr-round`: a demand-response round with 10,000 and 100,000 bids on the TRE's own service and a
 * durable SQLite store: time from the deadline to the pseudo-bids message being handed to the
 * broker (shuffle, serialise), and from the DSM's signed acceptance to every household notification
 * and ledger credit committed (the DSM's signing is outside the timing; the TRE's verification of it
 * is inside). The notifications are signed once per round: a Merkle tree over the households'
 * salted outcome leaves, one ES256 signature over its root, each household its leaf and proof; one
 * notification is verified as its agent would (outside the timing). Baseline, same run and data: the floor any
 * implementation pays, i.e. reading the same bids and serialising them (release), and marking the
 * accepted bids in one transaction (acceptance), without anonymity, credits or signatures.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DrOutcomeVerifier,
  ManualClock,
  type ParsedTopic,
  parseTopic,
  signContent,
  topics,
} from '@tre/protocol';
import {
  createLogger,
  HouseholdRegistry,
  MessageRouter,
  newPseudonym,
  Store,
  wireFlows,
} from '@tre/tre-broker';
import type { BenchResult } from './report.js';

export async function runDrRound(
  sizes: number[] = [10_000, 100_000],
  progress: (l: string) => void = () => {},
): Promise<BenchResult> {
  const rows: (string | number)[][] = [];
  for (const n of sizes) {
    const dir = await mkdtemp(join(tmpdir(), 'bench-dr-'));
    try {
      const t0 = Date.UTC(2026, 6, 1, 8);
      const store = Store.openIn(dir, { dataKey: randomBytes(32) }); // encrypted at rest, as in the TRE
      let published = 0;
      let lastPayloadBytes = 0;
      let lastReceipt = '';
      let lastNotice: { meterId: string; payload: string } | undefined;
      let pseudoBids: { pseudonym: string }[] = [];
      const outbound = {
        async publish(topic: string, payload: string | Buffer) {
          published++;
          const parsed = parseTopic(topic);
          if (parsed?.scope !== 'party') return;
          if (parsed.family === 'bids') {
            lastPayloadBytes = payload.length;
            pseudoBids = (JSON.parse(payload.toString()) as { bids: { pseudonym: string }[] }).bids;
          }
          if (parsed.family === 'inbox' && parsed.param === 'receipt') lastReceipt = payload.toString();
          if (parsed.family === 'inbox' && parsed.param === 'dr-outcome')
            lastNotice = { meterId: parsed.owner.id, payload: payload.toString() };
        },
      };
      const log = createLogger({ level: 'silent' });
      const router = new MessageRouter(outbound, log);
      const tre = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const clock = new ManualClock(t0);
      const registry = new HouseholdRegistry(store);
      const flows = wireFlows({ store, registry, router, outbound, clock, log, signingKey: tre.privateKey });
      flows.start();
      progress(`${n} bids: setting up`);
      await registry.upsert(
        Array.from({ length: n }, (_, i) => ({
          meterId: `h${i}`,
          supplierId: 's',
          dnoId: 'd',
          capacityW: 8_000,
          account: `a${i}`,
        })),
      );
      const dsmKeys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const from = { role: 'dsm' as const, id: 'x', serial: '1', publicKey: dsmKeys.publicKey };
      const event = {
        v: 1 as const,
        eventId: 'e1',
        dsmId: 'x',
        windowStart: new Date(t0 + 7_200_000).toISOString(),
        windowEnd: new Date(t0 + 10_800_000).toISOString(),
        bidDeadline: new Date(t0 + 60_000).toISOString(),
        acceptBy: new Date(t0 + 3_600_000).toISOString(),
        requestedReductionWh: 1,
        priceCapPerMWh: 1_000_000,
      };
      await router.route({
        from,
        topic: parseTopic(topics.drEvent('x')) as Extract<ParsedTopic, { scope: 'party' }>,
        payload: Buffer.from(
          JSON.stringify({
            v: 1,
            requestId: 'e',
            jws: await signContent('drEvent', event, dsmKeys.privateKey),
          }),
        ),
      });
      // The bids as the bid handler stores them (routing 100,000 signed-in bids is not what is measured).
      await store.commit(() => {
        for (let i = 0; i < n; i++)
          flows.drBook.addBid({
            bid_id: `bid-${i}-xxxxxx`,
            event_id: 'e1',
            meter_id: `h${i}`,
            quantity_wh: 100 + (i % 900),
            price: 1_000 + (i % 5_000),
            pseudonym: newPseudonym(),
          });
      });

      // Baseline release: read and serialise the same bids.
      let s = performance.now();
      const plain = flows.drBook.bidsOf('e1', 'live');
      const plainBytes = JSON.stringify(plain).length;
      const baselineRelease = performance.now() - s;

      const beforeRelease = published;
      s = performance.now();
      clock.advance(60_000); // the deadline timer fires the release
      while (published < beforeRelease + 2) await new Promise((r) => setImmediate(r)); // clear of the announcement + the bids
      const release = performance.now() - s;
      const accepted = pseudoBids.filter((_, i) => i % 2 === 0).map((b) => b.pseudonym);

      // Baseline acceptance: mark the same bids in one transaction (status unchanged).
      const acceptedIds = plain.filter((_, i) => i % 2 === 0).map((b) => b.bid_id);
      s = performance.now();
      await store.commit(() => {
        for (const id of acceptedIds) flows.drBook.markBid(id, 'live');
      });
      const baselineAccept = performance.now() - s;

      const acceptance = Buffer.from(
        JSON.stringify({
          v: 1,
          requestId: 'a',
          jws: await signContent(
            'drAcceptance',
            { v: 1, eventId: 'e1', dsmId: 'x', accepted },
            dsmKeys.privateKey,
          ),
        }),
      );
      const before = published;
      s = performance.now();
      await router.route({
        from,
        topic: parseTopic(topics.accept('x', 'e1')) as Extract<ParsedTopic, { scope: 'party' }>,
        payload: acceptance,
      });
      const accept = performance.now() - s;
      const notifications = published - before - 1; // minus the DSM's receipt
      if (!lastReceipt.includes('"accepted"')) throw new Error(`acceptance refused: ${lastReceipt}`);
      if (!lastNotice) throw new Error('no household was notified');
      const checked = await new DrOutcomeVerifier().verify(JSON.parse(lastNotice.payload), {
        meterId: lastNotice.meterId,
        treKey: tre.publicKey,
        treKeyId: 'tre',
      });
      if (!checked.ok) throw new Error(`a household would refuse its outcome: ${checked.reason}`);
      const noticeBytes = lastNotice.payload.length;
      await flows.stop();
      store.close();
      rows.push([
        n,
        release,
        baselineRelease,
        accept,
        baselineAccept,
        notifications,
        noticeBytes,
        Math.round(lastPayloadBytes / 1024),
      ]);
      progress(
        `${n} bids: release ${release.toFixed(0)} ms, acceptance ${accept.toFixed(0)} ms (${notifications} notifications), plain ${plainBytes} bytes`,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return {
    name: 'dr-round',
    description:
      'demand-response round on the TRE service with a durable store (in process; network not included)',
    columns: [
      'bids',
      'deadline -> pseudo-bids ms',
      'baseline read+serialise ms',
      'acceptance -> notified + credited ms',
      'baseline mark-accepted ms',
      'notifications',
      'notification bytes',
      'last message KiB',
    ],
    rows,
    notes: [
      'Every bidder is told accepted or not, with one ES256 signature per round: a Merkle tree over the salted outcome leaves, each notification its leaf, inclusion proof and the signed root.',
    ],
  };
}
