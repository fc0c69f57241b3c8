/**
 * Property: for random readings, tariffs, duplicates, reorderings and resends, each statement's
 * total equals an independent recomputation of sum(m_t x p_t), exactly, in integers.
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

  it('statement total = independent sum of m_t x p_t (property)', { timeout: 120_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 }),
        fc.array(fc.integer({ min: 0, max: 2_500 }), { minLength: 2, maxLength: 24 }),
        fc.array(fc.integer({ min: 0, max: 500_000 }), { minLength: 48, maxLength: 48 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        fc.nat(),
        fc.nat(),
        async (households, energies, prices, resendPicks, shuffleSeed, tariffPosition) => {
          const f = flowContext(T0 - 3_600_000);
          try {
            const { billing } = f.flows({ billing: { minPeriod: { unit: 'day', count: 1 } } });
            const meters = Array.from({ length: households }, (_, i) => `p${i}`);
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
            const tariff: Tariff = {
              v: 1,
              supplierId: 's1',
              tariffId: 't1',
              currency: 'GBP',
              validFrom: new Date(T0).toISOString(),
              validTo: new Date(T0 + DAY).toISOString(),
              intervalMinutes: 30,
              pricesPerMWh: prices,
            };
            const tariffMsg = {
              v: PROTOCOL_VERSION,
              requestId: 'tariff',
              jws: await signContent('tariff', tariff, supplier.privateKey),
            };
            // Readings (honest registers), each household shifted, plus resends, in a random order.
            const msgs: { meter: string; body: object }[] = [];
            for (const [h, m] of meters.entries()) {
              let reg = 1_000 * (h + 1);
              energies.forEach((e, i) => {
                const energy = (e * (h + 1)) % 2_501;
                reg += energy;
                msgs.push({
                  meter: m,
                  body: {
                    v: 1,
                    requestId: `${m}-${i}`,
                    intervalStart: new Date(T0 + i * Q).toISOString(),
                    intervalMinutes: 15,
                    energyWh: energy,
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
            f.clock.advance(3_600_000 + energies.length * Q + 60_000); // all intervals have ended
            const tariffAt = tariffPosition % (rnd.length + 1);
            for (let k = 0; k <= rnd.length; k++) {
              if (k === tariffAt)
                expect(await supplier.send(topics.tariff('s1'), tariffMsg)).toMatchObject({
                  status: 'accepted',
                });
              if (k === rnd.length) break;
              const m = msgs[rnd[k]!]!;
              await f.party({ role: 'meter', id: m.meter }).send(topics.reading(m.meter), m.body);
            }
            // Just before the TRE's own statement timer (period end + grace hour), close the period directly:
            // deterministic, and no timer is left running when the store closes.
            f.clock.advance(T0 + DAY + 3_600_000 - 1 - f.clock.now());
            await billing.closePeriod('s1', T0, T0 + DAY);
            const statements = f.published
              .filter((p) => p.topic === topics.statement('s1'))
              .map((p) => decodeJwt(JSON.parse(p.payload).jws) as unknown as Statement);
            expect(statements).toHaveLength(households);
            for (const [h, m] of meters.entries()) {
              let micro = 0n;
              energies.forEach((e, i) => {
                micro += BigInt((e * (h + 1)) % 2_501) * BigInt(prices[Math.floor(i / 2)]!);
              });
              const st = statements.find((s) => s.account === `a-${m}`)!;
              expect(BigInt(st.totalMinor)).toBe(roundTiesEven(micro, 1_000_000n));
              expect(st.intervalsBilled).toBe(energies.length);
            }
            billing.stop();
          } finally {
            f.close();
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
