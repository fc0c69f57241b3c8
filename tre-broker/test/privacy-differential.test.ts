/**
 * The provider-view differential test (issue 16, item 8): the general check for leaks nobody
 * listed. A random but valid scenario (groups, billing calendar, tariff, a DR event, bids, the
 * DSM's acceptance rule, and sometimes the DSM's modification and/or cancellation of the event in
 * any stage and households' overrides of their accepted sheds) runs through the TRE's real flows
 * five times: as drawn, and with one household T's input changed in a neighbouring way (one
 * reading changed; T absent; T's bids absent; T overrides or not), the DP noise seeded
 * identically. The scenario, the classes and the comparison are in support/provider-view.ts; the
 * same over three shards: privacy-differential-shards.test.ts. Every message any provider receives (DNO, supplier,
 * DSM, the public broadcasts) is compared field by field, with its topic and its time: each field
 * must be classified below, and may differ only as its class allows. A new message kind or field
 * fails here until it is classified, so it cannot slip through.
 */
import { topics } from '@tre/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  classified,
  compare,
  kindOf,
  NEIGHBOURS,
  providerView,
  reached,
  type Scenario,
  scenarios,
} from './support/provider-view.js';

describe('provider view: neighbouring inputs', () => {
  it('every field every provider receives is classified, and differs only as its class allows', {
    timeout: 300_000,
  }, async () => {
    let scenariosRun = 0;
    await fc.assert(
      fc.asyncProperty(scenarios, async (s) => {
        const t = performance.now();
        const base = (await providerView(s, 'as-drawn', 'single')).received;
        if (process.env.DIFF_DEBUG) {
          console.log(`one run ${(performance.now() - t).toFixed(0)} ms, ${base.length} messages`);
          console.log([...new Set(base.map((r) => kindOf(r.topic)))].join(' '));
          for (const r of base) if (r.topic.endsWith('receipt')) console.log(r.payload);
        }
        expect(base.some((r) => kindOf(r.topic) === 'supplier/statement')).toBe(true);
        expect(base.some((r) => kindOf(r.topic) === 'dno/aggregate')).toBe(true);
        // The first round's bids are released unless the DSM changed it while open.
        if (s.dr.modify?.stage !== 'open' && !(s.dr.cancel === 'open' && !s.dr.modify))
          expect(base.some((r) => kindOf(r.topic) === 'dsm/bids')).toBe(true);
        // Delta = min(the regulator's bound or the default 5,500 Wh, 6 kW x 30 min), epsilon 1.
        const delta = Math.min(s.contributionBoundWh ?? 5_500, 3_000);
        for (const r of base.filter((m) => kindOf(m.topic) === 'dno/aggregate'))
          expect((JSON.parse(r.payload) as { noiseScaleWh: number }).noiseScaleWh).toBe(delta);
        for (const variant of NEIGHBOURS) {
          scenariosRun++;
          expect(compare(base, (await providerView(s, variant, 'single')).received, variant, s)).toEqual([]);
        }
      }),
      { numRuns: Number(process.env.DIFF_RUNS ?? 8), endOnFailure: !!process.env.DIFF_DEBUG },
    );
    console.log(
      `provider-view differential: ${scenariosRun} neighbouring runs, ${classified.size} fields compared;`,
      `reached: ${JSON.stringify(reached)}`,
    );
  });

  it('an unclassified field fails the comparison (the check itself can fail)', () => {
    const s = { groups: [[0]] } as Scenario;
    const msg = (extra: object) => ({
      where: '',
      topic: topics.aggregate('d', 'g0'),
      at: 0,
      payload: JSON.stringify({
        v: 1,
        groupId: 'g0',
        noisyTotalWh: 1,
        epsilon: '1/1',
        noiseScaleWh: 1,
        ...extra,
      }),
    });
    expect(compare([msg({ included: 3 })], [msg({ included: 2 })], 'target-absent', s)).toContain(
      'unclassified field dno/aggregate included',
    );
    expect(compare([msg({ groupId: 'g0' })], [msg({ noisyTotalWh: 9 })], 'target-absent', s)).toEqual([
      'target-absent: dno/aggregate noisyTotalWh moved by -8 (sensitivity 1)',
    ]);
    // A compliance report in which more than T's one result differs (an override seen twice).
    const report = (delivered: boolean[]) => ({
      where: '',
      topic: topics.compliance('x', 'e1'),
      at: 0,
      payload: JSON.stringify({
        v: 1,
        eventId: 'e1',
        results: delivered.map((d, i) => ({ pseudonym: `p${i}`, delivered: d })),
      }),
    });
    expect(
      compare([report([true, true, false])], [report([true, false, false])], 'override-flipped', s),
    ).toEqual([]);
    expect(
      compare([report([true, true, false])], [report([false, false, false])], 'override-flipped', s),
    ).toEqual(['override-flipped: dsm/compliance results[]: more than one element differs']);
    // A DR announcement's revision, or a cancellation flag only one run has.
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const announcement = (extra: object) => ({
      where: '',
      topic: topics.broadcastDrEvent('e1'),
      at: 0,
      payload: JSON.stringify({ v: 1, jws: `${b64({ alg: 'ES256' })}.${b64({ v: 1, ...extra })}.sig` }),
    });
    expect(
      compare(
        [announcement({ revision: 1 })],
        [announcement({ revision: 1, cancelled: true })],
        'override-flipped',
        s,
      ),
    ).toEqual(['override-flipped: broadcast/dr-event jws.cancelled: undefined vs true']);
  });
});
