/**
 * The `reconnect` benchmark, small: 20 real agents attest a TPM-backed TRE process (swtpm), the TRE
 * is stopped, each agent queues an hour of readings, the TRE starts again; every reading ends up in
 * the TRE's store exactly once (counted there, after the run) and every agent re-attested.
 * Needs the build (the TRE CLI and the load generator run from dist/) and swtpm.
 */
import { describe, expect, it } from 'vitest';
import { runReconnect } from '../src/reconnect.js';

describe('reconnect benchmark (20 agents, swtpm)', () => {
  it('commits every queued reading exactly once after the TRE restarts', { timeout: 120_000 }, async () => {
    const result = await runReconnect({
      agents: 20,
      generators: 1,
      timeoutSeconds: 110,
      baseline: false,
      profile: false,
    });
    const s = result.summary!;
    // 20 agents x (1 reading before the outage + 4 queued during it), none refused, none twice.
    expect(s.expectedReadings).toBe(100);
    expect(s.treStoredReadings).toBe(100);
    expect(s.treRefusedReadings).toBe(0);
    const [tre] = result.rows;
    expect(tre![0]).toMatch(/^TRE/);
    // Every agent re-attested and drained after the TRE listened again (times are from that moment).
    expect(s.treAllCommittedMs).toBeGreaterThanOrEqual(s.treAllReattestedMs!);
    expect(s.treAllReattestedMs).toBeGreaterThan(0);
  });
});
