/**
 * Property: for random readings of 15 or 30 minutes per household, 15- or 30-minute tariffs,
 * duplicates, reorderings and resends, each statement's total equals an independent recomputation
 * of sum(m_t x p_t) under the split rule (reading-charge.ts), exactly, in integers.
 */
import { PROTOCOL_VERSION, type Statement, signContent, type Tariff, topics } from '@tre/protocol';
import fc from 'fast-check';
import { decodeJwt } from 'jose';
import { describe, expect, it } from 'vitest';
import { roundHalfEven } from '../src/billing/ledger.js';
import { flowContext } from './support/flow-context.js';

const DAY = 86_400_000;
const Q = 900_000;
const T0 = Date.UTC(2026, 4, 4);

/** Independent rounding: nearest integer, ties to even, from numerator and denominator. */
function roundTiesEven(num: bigint, den: bigint): bigint {
  const sign = num < 0n ? -1n : 1n;
  const a = num * sign;
  const floor = a / den;
  const rem = a - floor * den;
  const up = rem * 2n > den || (rem * 2n === den && floor % 2n === 1n);
  return sign * (up ? floor + 1n : floor);
}

describe('ledger and statements', () => {
  it('round half-to-even', () => {
    expect(roundHalfEven(2_500_000n)).toBe(2n);
    expect(roundHalfEven(3_500_000n)).toBe(4n);
    expect(roundHalfEven(-2_500_000n)).toBe(-2n);
    expect(roundHalfEven(2_500_001n)).toBe(3n);
    expect(roundHalfEven(-3_499_999n)).toBe(-3n);
  });

  it('statement total = independent sum of m_t x p_t over mixed 15/30-minute readings and tariffs (property)', {
    timeout: 120_000,
  }, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.constantFrom(15 as const, 30 as const), { minLength: 1, maxLength: 3 }),
        fc.constantFrom(15 as const, 30 as const),
        fc.array(fc.integer({ min: 0, max: 2_500 }), { minLength: 2, maxLength: 24 }),
        fc.array(fc.integer({ min: 1_000, max: 500_000 }), { minLength: 96, maxLength: 96 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.nat(),
        async (lengths, tariffMinutes, energies, allPrices, resendPicks, shuffleSeed) => {
          const f = flowContext(T0 - 3_600_000);
          try {
            // Prices of any shape within 500x: the shape rules are tested on their own (billing-tariff-rules.test.ts).
            const { billing } = f.flows({
              billing: {
                minPeriod: { unit: 'day', count: 1 },
                tariffRules: {
                  floorPerMWh: 1,
                  maxRatioToMean: 1_000,
                  minBlockMinutes: 15,
                  minTariffMinutes: 15,
                },
              },
            });
            const meters = lengths.map((_, i) => `p${i}`);
            await f.ctx.registry.upsert(
              meters.map((m) => ({
                meterId: m,
                supplierId: 's1',
                dnoId: 'd1',
                capacityW: 10_000,
                account: `a-${m}`,
              })),
            );
            const supplier = f.party({ role: 'supplier', id: 's1' });
            expect(
              await supplier.send(topics.billingPeriod('s1'), {
                v: 1,
                requestId: 'bp',
                startsAt: new Date(T0).toISOString(),
                length: { unit: 'day', count: 1 },
              }),
            ).toMatchObject({ status: 'accepted' });
            const prices = allPrices.slice(0, (24 * 60) / tariffMinutes);
            const tariff: Tariff = {
              v: 1,
              supplierId: 's1',
              tariffId: 't1',
              currency: 'GBP',
              validFrom: new Date(T0).toISOString(),
              validTo: new Date(T0 + DAY).toISOString(),
              intervalMinutes: tariffMinutes,
              pricesPerMWh: prices,
            };
            // Tariffs are for future intervals only: it comes before any reading.
            expect(
              await supplier.send(topics.tariff('s1'), {
                v: PROTOCOL_VERSION,
                requestId: 'tariff',
                jws: await signContent('tariff', tariff, supplier.privateKey),
              }),
            ).toMatchObject({ status: 'accepted' });
            // Readings (honest registers) of each household's length, plus resends, in a random order.
            const msgs: { meter: string; body: object }[] = [];
            const energy = (e: number, h: number) => (e * (h + 1)) % 2_501;
            for (const [h, m] of meters.entries()) {
              let reg = 1_000 * (h + 1);
              energies.forEach((e, i) => {
                reg += energy(e, h);
                msgs.push({
                  meter: m,
                  body: {
                    v: 1,
                    requestId: `${m}-${i}`,
                    intervalStart: new Date(T0 + i * lengths[h]! * 60_000).toISOString(),
                    intervalMinutes: lengths[h],
                    energyWh: energy(e, h),
                    registerWh: reg,
                  },
                });
              });
            }
            for (const pick of resendPicks) msgs.push(msgs[pick % msgs.length]!);
            const rnd = fc.sample(
              fc.shuffledSubarray(
                msgs.map((_, i) => i),
                { minLength: msgs.length },
              ),
              { seed: shuffleSeed, numRuns: 1 },
            )[0]!;
            f.clock.advance(3_600_000 + energies.length * 2 * Q + 60_000); // all intervals have ended
            for (const k of rnd) {
              const m = msgs[k]!;
              await f.party({ role: 'meter', id: m.meter }).send(topics.reading(m.meter), m.body);
            }
            // Just before the TRE's own statement timer (period end + grace hour), close the period directly:
            // deterministic, and no timer is left running when the store closes.
            f.clock.advance(T0 + DAY + 3_600_000 - 1 - f.clock.now());
            await billing.closePeriod('s1', T0, T0 + DAY);
            const statements = f.published
              .filter((p) => p.topic === topics.statement('s1'))
              .map((p) => decodeJwt(JSON.parse(p.payload).jws) as unknown as Statement);
            expect(statements).toHaveLength(meters.length);
            const priceAt = (t: number) => BigInt(prices[Math.floor((t - T0) / (tariffMinutes * 60_000))]!);
            for (const [h, m] of meters.entries()) {
              let micro = 0n;
              energies.forEach((e, i) => {
                const start = T0 + i * lengths[h]! * 60_000;
                const wh = BigInt(energy(e, h));
                if (lengths[h] === 15) micro += wh * priceAt(start);
                else {
                  // The stated rule: halves in whole Wh, the odd Wh to the first quarter hour.
                  const second = wh / 2n;
                  micro += (wh - second) * priceAt(start) + second * priceAt(start + Q);
                }
              });
              const st = statements.find((s) => s.account === `a-${m}`)!;
              expect(BigInt(st.totalMinor)).toBe(roundTiesEven(micro, 1_000_000n));
              expect(st.basis).toBe('estimated'); // at most 12 of the day's 24 hours have readings
            }
            billing.stop();
          } finally {
            f.close();
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
