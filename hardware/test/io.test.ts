import { describe, expect, it } from 'vitest';
import { drivableActuator, LoadSwitch, MockIo, parseActuator } from '../src/io/index.js';

describe('load switch over johnny-five (mock IO: no GPIO on this machine)', () => {
  it('sheds and restores loads by actuator reference and shows trust on the LED', async () => {
    const io = new MockIo();
    const sw = await LoadSwitch.open(io, { statusLedPin: 27 });
    sw.shed('relay:17');
    expect(io.level(17)).toBe(1); // NC relay: energising the coil opens the circuit, the load is off
    sw.restore('relay:17');
    expect(io.level(17)).toBe(0);
    sw.showTrust('trusted');
    expect(io.level(27)).toBeGreaterThan(0);
    expect(io.writes.filter(([p]) => p === 17).map(([, v]) => v)).toEqual([1, 0]);
  });
  it('refuses malformed actuator references', () => {
    expect(parseActuator('relay:4')).toBe(4);
    expect(() => parseActuator('gpio4')).toThrow(/relay:<pin>/);
    // What the agent may offer in a bid: only loads it can switch.
    expect(drivableActuator('relay:17')).toBe(true);
    expect(drivableActuator('plug:laundry')).toBe(false);
  });
});
