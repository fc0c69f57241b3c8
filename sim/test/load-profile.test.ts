import { describe, expect, it } from 'vitest';
import { householdProfile, powerW, SimulatedMeter } from '../src/households/load-profile.js';

describe('simulated households', () => {
  it('are deterministic and plausible: 5-20 kWh a day on average (EVs and heat pumps included), evening above night', () => {
    const start = Date.UTC(2026, 10, 2); // a Monday in November
    let totalKwh = 0;
    let evening = 0;
    let night = 0;
    const n = 100;
    for (let s = 0; s < n; s++) {
      const p = householdProfile(s);
      expect(householdProfile(s)).toEqual(p);
      const meter = new SimulatedMeter(p, start);
      const r0 = meter.registerWh;
      meter.advanceTo(start + 7 * 86_400_000);
      totalKwh += (meter.registerWh - r0) / 1000 / 7;
      evening += powerW(p, start + 18.5 * 3_600_000);
      night += powerW(p, start + 3.5 * 3_600_000);
    }
    const perDay = totalKwh / n;
    expect(perDay).toBeGreaterThan(5);
    expect(perDay).toBeLessThan(20);
    expect(evening / n).toBeGreaterThan(1.5 * (night / n));
  });
  it('never exceeds the connection capacity', () => {
    for (let s = 0; s < 50; s++) {
      const p = householdProfile(s);
      for (let t = 0; t < 3 * 86_400_000; t += 600_000)
        expect(powerW(p, Date.UTC(2026, 0, 1) + t)).toBeLessThanOrEqual(p.capacityW);
    }
  });
});
