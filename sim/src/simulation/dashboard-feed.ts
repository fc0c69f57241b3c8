/**
 * What the dashboard (and `tre-sim run`) reads from the running simulation beside the released
 * totals; in a cluster, over every shard (each household's budget from its own shard).
 */

import type { Statement } from '@tre/protocol';
import type { DrRoundRow, StatementPeriodRow } from '../dashboard/snapshot.js';
import type { Dsm } from '../parties/dsm.js';
import type { SimulatedSystem } from './setup.js';
import type { SimulatedShard } from './simulated-tre.js';

const BUDGET_BUCKETS = [
  '0-10 %',
  '10-20 %',
  '20-30 %',
  '30-40 %',
  '40-50 %',
  '50-60 %',
  '60-70 %',
  '70-80 %',
  '80-90 %',
  '90-100 %',
];

/** Each DR round: bids released, accepted, the DSM's credit and the compliance verdicts. */
export function drRounds(dsm: Dsm): DrRoundRow[] {
  return [...dsm.rounds.values()].map((r) => ({
    eventId: r.event.eventId,
    windowStart: r.event.windowStart,
    windowEnd: r.event.windowEnd,
    bids: r.bids?.bids.length ?? 0,
    accepted: r.accepted.length,
    creditMinor: Math.round(r.creditMicro / 1e6),
    delivered: r.compliance?.results.filter((x) => x.delivered).length ?? 0,
    notDelivered: r.compliance?.results.filter((x) => !x.delivered).length ?? 0,
  }));
}

/** How many households have spent how much of today's privacy budget, in tenths. */
export function budgetDistribution(
  sys: Pick<SimulatedSystem, 'households' | 'homes'>,
): { bucket: string; households: number }[] {
  const counts = BUDGET_BUCKETS.map(() => 0);
  for (const shard of new Set(sys.homes)) {
    const meterIds = sys.households.filter((_, i) => sys.homes[i] === shard).map((h) => h.id.meterId);
    for (const f of shard.tre.monitoring.budgetSpent(meterIds)) counts[Math.min(9, Math.floor(f * 10))]!++;
  }
  return BUDGET_BUCKETS.map((bucket, i) => ({ bucket, households: counts[i]! }));
}

/** The latest alerts of every TRE (shard), newest first, at most `limit`. */
export function recentAlerts(
  shards: readonly SimulatedShard[],
  limit: number,
): { kind: string; detail: string; at: number }[] {
  return shards
    .flatMap((s) => s.tre.readings.recentAlerts(limit))
    .sort((a, b) => b.at - a.at)
    .slice(0, limit);
}

/** The supplier's statements per billing period, newest first, at most `limit` periods. */
export function statementPeriods(statements: Iterable<Statement>, limit = 8): StatementPeriodRow[] {
  const byPeriod = new Map<string, StatementPeriodRow>();
  for (const st of statements) {
    const key = `${st.periodStart}/${st.periodEnd}`;
    const row = byPeriod.get(key) ?? {
      periodStart: st.periodStart,
      periodEnd: st.periodEnd,
      statements: 0,
      totalMinor: 0,
      estimated: 0,
    };
    row.statements++;
    row.totalMinor += st.totalMinor;
    if (st.basis === 'estimated') row.estimated++;
    byPeriod.set(key, row);
  }
  return [...byPeriod.values()]
    .sort((a, b) => Date.parse(b.periodStart) - Date.parse(a.periodStart))
    .slice(0, limit);
}
