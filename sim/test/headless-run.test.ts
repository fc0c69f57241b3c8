/** `tre-sim run` end to end: all parties, two simulated days, every invariant checked from outside the TRE. */
import { describe, expect, it } from 'vitest';
import { Simulation } from '../src/simulation/simulation.js';

describe('headless simulation', () => {
  it('keeps every invariant over two days with 40 households', { timeout: 120_000 }, async () => {
    const sim = await Simulation.create({
      households: 40,
      days: 2,
      speed: 1_000_000,
      startMs: Date.UTC(2026, 0, 12, 0),
    });
    try {
      const summary = await sim.run();
      for (const inv of summary.invariants) expect(inv.holds, `${inv.name}: ${inv.detail}`).toBe(true);
      // All 40 read their meter over a virtual serial port (DSMR telegrams): the first interval has no
      // register at its start, so each household sends 191 of the 192 intervals.
      expect(summary.readings.sent).toBe(40 * (2 * 96 - 1));
      expect(sim.statementCount()).toBeGreaterThanOrEqual(40);
      expect(sim.drRounds().length).toBe(2);
      expect(sim.drRounds().some((r) => r.accepted > 0)).toBe(true);
      // Every agent attested the TRE with a real (software) TPM quote before sending anything.
      expect(sim.tre.attestation?.service.stats.quotes).toBeGreaterThan(0);
      expect(sim.attestationMode).toMatch(/TPM quote/);
    } finally {
      await sim.stop();
    }
  });
});
