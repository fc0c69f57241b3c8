/** Builds the dashboard's snapshot from the simulation's state (ground truth next to what parties got). */
import { statementPeriods } from '../simulation/dashboard-feed.js';
import type { Simulation } from '../simulation/simulation.js';
import { clampedGroupTotalWh, trueGroupTotalWh } from '../simulation/true-group-total.js';
import type { DashboardSnapshot } from './snapshot.js';

const MAX_POINTS = 96;

export function buildSnapshot(sim: Simulation, speed: number): DashboardSnapshot {
  const now = sim.clock.now();
  // An agent re-attesting (every 15 simulated minutes) still trusts the TRE it verified.
  const trusted = sim.households.filter(
    (h) => h.link.state === 'trusted' || h.link.state === 'attesting',
  ).length;
  const aggregates: DashboardSnapshot['aggregates'] = [];
  for (const [groupId, releases] of sim.dno.releases) {
    const members = sim.groups.get(groupId) ?? [];
    const points = releases.slice(-MAX_POINTS).map((r) => ({
      t: Date.parse(r.intervalStart),
      noisyWh: r.noisyTotalWh,
      trueWh: trueGroupTotalWh(members, r, sim.opts.intervalMinutes),
      clampedWh: clampedGroupTotalWh(members, r, sim.opts.intervalMinutes),
      bound95Wh: r.bound95Wh,
    }));
    aggregates.push({ groupId, points });
  }
  const bills = sim.households.map((h) => h.agent.bill).filter((b) => b !== undefined);
  // One point per simulated instant (the page asks often; the clock moves by intervals).
  if ((sim.billingSeries.at(-1)?.t ?? -Infinity) < now)
    sim.billingSeries.push({ t: now, runningTotalMinor: bills.reduce((a, b) => a + b.runningTotalMinor, 0) });
  if (sim.billingSeries.length > 4 * MAX_POINTS)
    sim.billingSeries.splice(0, sim.billingSeries.length - 4 * MAX_POINTS);
  const alerts = sim.recentAlerts(20);
  return {
    simTime: new Date(now).toISOString(),
    speed,
    households: sim.households.length,
    attestation: {
      status: trusted === sim.households.length ? 'trusted' : trusted === 0 ? 'pending' : 'untrusted',
      detail: sim.attestationMode,
      trustedAgents: trusted,
    },
    aggregates,
    billing: {
      points: sim.billingSeries,
      statements: sim.statementCount(),
      periods: statementPeriods(sim.supplier.statements.values()),
      currency: bills[0]?.currency ?? 'GBP',
    },
    dr: sim.drRounds(),
    budget: sim.budgetDistribution(),
    alerts: alerts.map((a) => ({ at: new Date(a.at).toISOString(), kind: a.kind, message: a.detail })),
  };
}
