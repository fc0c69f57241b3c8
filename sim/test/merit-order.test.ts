import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { meritOrder } from '../src/parties/merit-order.js';

describe('merit-order clearing', () => {
  it('takes the cheapest bids first until the request is met', () => {
    const bids = [
      { pseudonym: 'a', quantityWh: 500, pricePerMWh: 300 },
      { pseudonym: 'b', quantityWh: 400, pricePerMWh: 100 },
      { pseudonym: 'c', quantityWh: 300, pricePerMWh: 200 },
    ];
    expect(meritOrder(bids, 600).map((b) => b.pseudonym)).toEqual(['b', 'c']);
    expect(meritOrder(bids, 10_000).map((b) => b.pseudonym)).toEqual(['b', 'c', 'a']);
    expect(meritOrder(bids, 0)).toEqual([]);
  });
  it('never takes a dearer bid while leaving a cheaper one, and stops once the request is met', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            pseudonym: fc.uuid(),
            quantityWh: fc.integer({ min: 1, max: 1000 }),
            pricePerMWh: fc.integer({ min: 0, max: 1000 }),
          }),
        ),
        fc.integer({ min: 0, max: 5000 }),
        (bids, requested) => {
          const chosen = meritOrder(bids, requested);
          const maxChosen = Math.max(-1, ...chosen.map((b) => b.pricePerMWh));
          const left = bids.filter((b) => !chosen.includes(b));
          expect(left.every((b) => b.pricePerMWh >= maxChosen)).toBe(true);
          const total = chosen.reduce((a, b) => a + b.quantityWh, 0);
          if (chosen.length > 0)
            expect(total - chosen[chosen.length - 1]!.quantityWh).toBeLessThan(requested);
          if (left.length > 0) expect(total).toBeGreaterThanOrEqual(requested);
        },
      ),
    );
  });
});
