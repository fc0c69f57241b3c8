/** DR settlement of one accepted bid, without SQLite or MQTT. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { settle } from '../src/demand-response/settlement.js';

const bid = { quantityWh: 1_000, pricePerMWh: 200_000 }; // credit 200,000,000 micro-minor
const complete = (wh: number) => ({ wh, complete: true });

describe('settle', () => {
  it('delivered at the threshold keeps the whole credit', () => {
    expect(settle(bid, 3_000, complete(2_100), 0.9)).toEqual({
      delivered: true,
      keepMilli: 1000,
      reversalMicro: 0,
    });
  });

  it('a partial delivery above half keeps its share; below half reverses all', () => {
    expect(settle(bid, 3_000, complete(2_300), 0.9)).toEqual({
      delivered: false,
      keepMilli: 700,
      reversalMicro: 60_000_000,
    });
    expect(settle(bid, 3_000, complete(2_600), 0.9)).toEqual({
      delivered: false,
      keepMilli: 0,
      reversalMicro: 200_000_000,
    });
  });

  it('no baseline or incomplete readings: nothing delivered, all reversed', () => {
    expect(settle(bid, undefined, complete(0), 0.9).reversalMicro).toBe(200_000_000);
    expect(settle(bid, 3_000, { wh: 0, complete: false }, 0.9).delivered).toBe(false);
  });

  it('the reversal is an integer between 0 and the credit (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50_000 }),
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.option(fc.nat(100_000), { nil: undefined }),
        fc.nat(100_000),
        fc.boolean(),
        (quantityWh, pricePerMWh, baseline, measured, full) => {
          const s = settle({ quantityWh, pricePerMWh }, baseline, { wh: measured, complete: full }, 0.9);
          expect(Number.isSafeInteger(s.reversalMicro)).toBe(true);
          expect(s.reversalMicro).toBeGreaterThanOrEqual(0);
          expect(s.reversalMicro).toBeLessThanOrEqual(quantityWh * pricePerMWh);
          if (s.delivered) expect(s.reversalMicro).toBe(0);
        },
      ),
    );
  });
});
