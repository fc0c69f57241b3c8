/**
 * Unlinkability of the DSM's view: which household placed which bid, and when, does not change the
 * distribution of what the DSM receives. Two households A and B bid in every round (A always first);
 * in scenario X A offers 100 Wh and B 200 Wh, in scenario Y they swap. Over 1,000 rounds each, the
 * position of the 100 Wh bid in the released message is uniform in both scenarios (binomial bound
 * fixed in advance) and the two scenarios are indistinguishable (two-proportion bound).
 */
import { type PseudoBids, signContent, topics } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { flowContext } from './support/flow-context.js';

const ROUNDS = 1_000;
const T0 = Date.UTC(2026, 6, 1, 8);

async function scenario(
  aQuantity: number,
  bQuantity: number,
): Promise<{ firstIs100: number; pseudonyms: Set<string> }> {
  const f = flowContext(T0);
  try {
    const { demandResponse: dr } = f.flows();
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
    const a = f.party({ role: 'meter', id: 'a' });
    const b = f.party({ role: 'meter', id: 'b' });
    let firstIs100 = 0;
    const pseudonyms = new Set<string>();
    for (let r = 0; r < ROUNDS; r++) {
      const now = f.clock.now();
      const eventId = `e${r}`;
      const event = {
        v: 1,
        eventId,
        dsmId: 'x',
        windowStart: new Date(now + 7_200_000).toISOString(),
        windowEnd: new Date(now + 10_800_000).toISOString(),
        bidDeadline: new Date(now + 60_000).toISOString(),
        acceptBy: new Date(now + 3_600_000).toISOString(),
        requestedReductionWh: 300,
        priceCapPerMWh: 1_000,
      };
      await dsm.send(topics.drEvent('x'), {
        v: 1,
        requestId: `e${r}`,
        jws: await signContent('drEvent', event, dsm.privateKey),
      });
      await a.send(topics.bid('a'), {
        v: 1,
        requestId: `a${r}`,
        bidId: `bid-a-${r}-xxxx`,
        eventId,
        quantityWh: aQuantity,
        pricePerMWh: 500,
      });
      await b.send(topics.bid('b'), {
        v: 1,
        requestId: `b${r}`,
        bidId: `bid-b-${r}-xxxx`,
        eventId,
        quantityWh: bQuantity,
        pricePerMWh: 500,
      });
      f.clock.advance(60_000); // the deadline: the TRE's own timer releases the bids
      while (!f.published.some((p) => p.topic === topics.pseudoBids('x', eventId)))
        await new Promise((r) => setImmediate(r));
      const msg = JSON.parse(
        f.published.filter((p) => p.topic === topics.pseudoBids('x', eventId))[0]!.payload,
      ) as PseudoBids;
      expect(msg.bids).toHaveLength(2);
      if (msg.bids[0]!.quantityWh === 100) firstIs100++;
      for (const bid of msg.bids) pseudonyms.add(bid.pseudonym);
      f.clock.advance(3_600_000);
    }
    dr.stop();
    return { firstIs100, pseudonyms };
  } finally {
    f.close();
  }
}

describe('unlinkability of released bids', () => {
  it('the DSM view has the same distribution whichever household placed a bid', {
    timeout: 120_000,
  }, async () => {
    const x = await scenario(100, 200);
    const y = await scenario(200, 100);
    const sd = Math.sqrt(ROUNDS * 0.25);
    console.log(
      `unlinkability: 100 Wh bid first in ${x.firstIs100}/${ROUNDS} (A bid it) and ${y.firstIs100}/${ROUNDS} (B bid it)`,
    );
    // Uniform position regardless of arrival order: within 4.5 standard deviations of 1/2 (alpha ~ 7e-6).
    expect(Math.abs(x.firstIs100 - ROUNDS / 2)).toBeLessThan(4.5 * sd);
    expect(Math.abs(y.firstIs100 - ROUNDS / 2)).toBeLessThan(4.5 * sd);
    // Swapping the households does not change the view: two-proportion difference within 4.5 sd.
    expect(Math.abs(x.firstIs100 - y.firstIs100)).toBeLessThan(4.5 * Math.sqrt(2) * sd);
    // Fresh single-use pseudonyms: never repeated, 128 bits.
    expect(x.pseudonyms.size).toBe(2 * ROUNDS);
    for (const p of x.pseudonyms) expect(Buffer.from(p, 'base64url')).toHaveLength(16);
  });
});
