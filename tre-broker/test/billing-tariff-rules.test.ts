/**
 * The regulator's tariff-shape rules and the split of readings over tariff intervals, as pure
 * functions: real tariffs pass the defaults, probe tariffs are refused naming the rule.
 */
import { DEFAULT_TARIFF_RULES, type Tariff } from '@tre/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readingCharge, splitEnergy } from '../src/billing/reading-charge.js';
import { checkTariffShape } from '../src/billing/tariff-rules.js';

const T0 = Date.UTC(2026, 5, 1);
const HALF_HOUR = 1_800_000;

function tariff(prices: number[], intervalMinutes: 15 | 30 = 30): Tariff {
  return {
    v: 1,
    supplierId: 's1',
    tariffId: 't',
    currency: 'GBP',
    validFrom: new Date(T0).toISOString(),
    validTo: new Date(T0 + prices.length * intervalMinutes * 60_000).toISOString(),
    intervalMinutes,
    pricesPerMWh: prices,
  };
}

/** 3-rate time of use: 15 p/kWh at night, 24 p by day, 35 p 16:00-19:00. */
const timeOfUse = Array.from({ length: 48 * 7 }, (_, i) => {
  const hour = Math.floor((i % 48) / 2);
  return hour < 7 ? 150_000 : hour >= 16 && hour < 19 ? 350_000 : 240_000;
});

/** Half-hourly, indexed to a day-ahead curve (night trough, morning and evening peaks), floored at 5 p/kWh. */
const dayAhead = Array.from({ length: 48 * 2 }, (_, i) => {
  const h = (i % 48) / 2;
  const wholesale =
    60_000 + 50_000 * Math.sin(((h - 4) / 24) * 2 * Math.PI) + (h >= 16 && h < 19 ? 120_000 : 0);
  return Math.max(50_000, Math.round(wholesale * 1.2 + 40_000 + (i % 5) * 1_000));
});

describe('tariff rules (defaults)', () => {
  it('accept a 3-rate time-of-use tariff and a half-hourly day-ahead-indexed tariff with a positive floor', () => {
    expect(checkTariffShape(tariff(timeOfUse), DEFAULT_TARIFF_RULES)).toBeUndefined();
    expect(checkTariffShape(tariff(dayAhead), DEFAULT_TARIFF_RULES)).toBeUndefined();
    // The same day-ahead tariff after a week of the time-of-use tariff (the reference window).
    expect(
      checkTariffShape(
        tariff(dayAhead),
        DEFAULT_TARIFF_RULES,
        timeOfUse.map((p) => ({ minutes: 30, pricePerMWh: p })),
      ),
    ).toBeUndefined();
  });

  it('refuse a tariff at zero everywhere but one interval (floor)', () => {
    const probe = Array.from({ length: 48 }, (_, i) => (i === 37 ? 240_000 : 0));
    expect(checkTariffShape(tariff(probe), DEFAULT_TARIFF_RULES)).toMatchObject({
      reason: 'TARIFF_BELOW_FLOOR',
    });
  });

  it('refuse a tariff at the floor everywhere but one interval (ratio)', () => {
    const probe = Array.from({ length: 48 }, (_, i) =>
      i === 37 ? 240_000 : DEFAULT_TARIFF_RULES.floorPerMWh,
    );
    expect(checkTariffShape(tariff(probe), DEFAULT_TARIFF_RULES)).toMatchObject({
      reason: 'TARIFF_PRICE_RATIO',
      message: expect.stringMatching(/4x away from the mean/),
    });
  });

  it('refuse one interval at 50x the rest (ratio), even in a long tariff', () => {
    for (const days of [1, 7, 31]) {
      const probe = Array.from({ length: 48 * days }, (_, i) => (i === 37 ? 50 * 200_000 : 200_000));
      expect(checkTariffShape(tariff(probe), DEFAULT_TARIFF_RULES)).toMatchObject({
        reason: 'TARIFF_PRICE_RATIO',
      });
    }
  });

  it('refuse a day priced far above the month before it (ratio over the reference window)', () => {
    const month = Array.from({ length: 48 * 30 }, () => ({ minutes: 30, pricePerMWh: 10_000 }));
    expect(checkTariffShape(tariff(Array(48).fill(500_000)), DEFAULT_TARIFF_RULES, month)).toMatchObject({
      reason: 'TARIFF_PRICE_RATIO',
    });
  });

  it('refuse a price held for one 15-minute interval (block) and a tariff shorter than a day', () => {
    const quarter = Array.from({ length: 96 }, (_, i) => (i === 41 ? 260_000 : 240_000));
    expect(checkTariffShape(tariff(quarter, 15), DEFAULT_TARIFF_RULES)).toMatchObject({
      reason: 'TARIFF_BLOCK_TOO_SHORT',
    });
    expect(checkTariffShape(tariff([240_000, 240_000]), DEFAULT_TARIFF_RULES)).toMatchObject({
      reason: 'TARIFF_TOO_SHORT',
    });
  });
});

describe('readings over tariff intervals of another length', () => {
  it('splits a reading into 15-minute parts in integer Wh, the remainder to the earliest parts', () => {
    expect(splitEnergy(7, 30)).toEqual([4, 3]);
    expect(splitEnergy(8, 30)).toEqual([4, 4]);
    expect(splitEnergy(5, 15)).toEqual([5]);
    expect(splitEnergy(0, 30)).toEqual([0, 0]);
  });

  it('a 30-minute reading under a 15-minute tariff pays each quarter its own price', () => {
    const prices = new Map([
      [T0, 100_000],
      [T0 + 900_000, 300_000],
    ]);
    expect(readingCharge(T0, 30, 7, (t) => prices.get(t))).toBe(4 * 100_000 + 3 * 300_000);
    expect(readingCharge(T0, 30, 7, (t) => (t === T0 ? 1 : undefined))).toBeUndefined();
  });

  it('property: under a constant price over the reading, the charge is Wh x price', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 500_000 }),
        fc.constantFrom(15, 30),
        fc.integer({ min: 1, max: 1e9 }),
        (wh, m, p) => {
          expect(readingCharge(T0 + HALF_HOUR, m, wh, () => p)).toBe(wh * p);
          expect(splitEnergy(wh, m).reduce((a, b) => a + b, 0)).toBe(wh);
        },
      ),
    );
  });
});
