/**
 * What `tre-sim run` checks from outside the TRE, against the simulator's own ground truth: every
 * acknowledged reading stored once with the energy sent, statements and DR credits recomputed, the
 * DP error within its stated bound, no household identifier at any provider. In a cluster of
 * shards the same checks run over every shard: a reading stored once in the whole cluster and in
 * its household's own shard only, one statement per account and period whichever shard sent it,
 * credits in each household's own shard.
 */
import { timeOfUsePrice } from '../parties/supplier.js';
import type { SimulatedSystem } from './setup.js';
import { clampedGroupTotalWh, trueGroupTotalWh } from './true-group-total.js';

export interface Invariant {
  name: string;
  holds: boolean;
  detail: string;
}

export interface ReadingCounts {
  sent: number;
  acknowledged: number;
  storedOnce: number;
  missing: number;
  duplicated: number;
}

/**
 * Released totals against the simulator's own truth: how often |noise| exceeded the stated 95 %
 * bound, the noise being the release minus the clamped total (each member's energy clamped to the
 * release's Delta, as the TRE does). The clamping bias (true minus clamped total) is not noise and
 * is outside that bound: it is counted separately, summed over the releases.
 */
export function dpCheck(sys: Pick<SimulatedSystem, 'dno' | 'groups' | 'opts' | 'households' | 'homes'>): {
  releases: number;
  outside: number;
  /** Sum over the releases of the true totals, and of what clamping cut off, Wh. */
  trueWh: number;
  clampedOffWh: number;
  /** Releases of groups whose members live in more than one shard (0 for a single TRE). */
  spanning: number;
} {
  let releases = 0;
  let outside = 0;
  let trueWh = 0;
  let clampedOffWh = 0;
  let spanning = 0;
  const homeOf = new Map(sys.households.map((h, i) => [h, sys.homes[i]]));
  for (const [groupId, list] of sys.dno.releases) {
    const members = sys.groups.get(groupId) ?? [];
    const spans = new Set(members.map((h) => homeOf.get(h))).size > 1;
    for (const r of list) {
      if (spans) spanning++;
      const truth = trueGroupTotalWh(members, r, sys.opts.intervalMinutes);
      const clamped = clampedGroupTotalWh(members, r, sys.opts.intervalMinutes);
      releases++;
      trueWh += truth;
      clampedOffWh += truth - clamped;
      if (Math.abs(r.noisyTotalWh - clamped) >= r.bound95Wh) outside++;
    }
  }
  return { releases, outside, trueWh, clampedOffWh, spanning };
}

/** The DP check as an invariant: at most 5 % outside the bound, with binomial 3-sigma slack. */
export function dpInvariant(sys: SimulatedSystem): Invariant {
  const { releases, outside, trueWh, clampedOffWh, spanning } = dpCheck(sys);
  const allowed = releases * 0.05 + 3 * Math.sqrt(releases * 0.05 * 0.95) + 1;
  const bias = trueWh > 0 ? ((100 * clampedOffWh) / trueWh).toFixed(2) : '0.00';
  const late = sys.tres.shards.reduce((n, s) => n + s.tre.monitoring.stats.lateShards, 0);
  const cluster =
    sys.tres.shards.length > 1
      ? `; ${spanning} releases of groups spanning shards, ${late} member-shard partials late`
      : '';
  return {
    name: 'DP error within its stated 95 % bound (binomial 3-sigma slack)',
    holds: releases > 0 && outside <= allowed,
    detail:
      `${releases} releases, ${outside} outside the bound (allowed ${Math.floor(allowed)}); ` +
      `clamping to the contribution bound cut ${clampedOffWh} Wh (${bias} % of the true totals, a bias outside the noise bound)${cluster}`,
  };
}

/** Each statement equals sum(m x p) recomputed here from what the household sent and the tariff. */
export function billingInvariant(sys: SimulatedSystem): Invariant {
  const byAccount = new Map(sys.accounts.map((account, i) => [account, i]));
  let checked = 0;
  let wrong = 0;
  let firstWrong = '';
  /** Statements per account and period (one each, whichever shard sent it), and per shard. */
  const perPeriod = new Set<string>();
  let twice = 0;
  const byShard = new Map<string, number>();
  for (const st of sys.supplier.statements.values()) {
    const index = byAccount.get(st.account);
    if (index === undefined) continue;
    const h = sys.households[index]!;
    const key = `${st.account}@${st.periodStart}`;
    if (perPeriod.has(key)) twice++;
    perPeriod.add(key);
    const shard = sys.homes[index]!.name;
    byShard.set(shard, (byShard.get(shard) ?? 0) + 1);
    const from = Date.parse(st.periodStart);
    const to = Date.parse(st.periodEnd);
    let micro = 0n;
    for (const [start, wh] of h.sent)
      if (start >= from && start < to) micro += BigInt(wh) * BigInt(timeOfUsePrice(start));
    // Demand-response credits (negative) and reversals, booked at their window's start.
    for (const o of h.agent.outcomes) {
      const window = Date.parse(sys.dsm.rounds.get(o.eventId)?.event.windowStart ?? '');
      if (o.creditMicroMinor && window >= from && window < to) micro += BigInt(o.creditMicroMinor);
    }
    const q = micro / 1_000_000n;
    const r = micro % 1_000_000n;
    const expected = r * 2n > 1_000_000n || (r * 2n === 1_000_000n && q % 2n === 1n) ? q + 1n : q;
    checked++;
    if (BigInt(st.totalMinor) !== expected) {
      wrong++;
      if (!firstWrong) {
        let n = 0;
        for (const start of h.sent.keys()) if (start >= from && start < to) n++;
        firstWrong = `; e.g. ${st.periodStart}: statement ${st.totalMinor} (${st.basis}), recomputed ${expected} (${n} intervals)`;
      }
    }
  }
  const shards =
    sys.tres.shards.length > 1
      ? `; by shard: ${[...byShard].map(([s, n]) => `${s} ${n}`).join(', ') || 'none'}; ${twice} accounts with two statements for one period`
      : '';
  return {
    name: 'each statement = sum(m x p) minus DR credits, recomputed by the simulator',
    holds: twice === 0 && (checked > 0 ? wrong === 0 : sys.opts.days * 24 < 25), // the first statement comes a grace hour after day 1
    detail: `${checked} statements checked, ${wrong} differ${firstWrong}${shards}`,
  };
}

/** DR credits the households were told equal the accepted bids the DSM cleared (q x p). */
export function drInvariant(sys: SimulatedSystem): Invariant {
  const dsmSide = [...sys.dsm.rounds.values()]
    .filter((r) => r.accepted.length > 0)
    .reduce((a, r) => a + r.creditMicro, 0);
  let households = 0;
  /** Accepted bids credited, by the shard (ledger) of the household. */
  const byShard = new Map<string, number>();
  sys.households.forEach((h, i) => {
    for (const o of h.agent.outcomes.filter((x) => x.outcome === 'accepted')) {
      households -= o.creditMicroMinor ?? 0;
      byShard.set(sys.homes[i]!.name, (byShard.get(sys.homes[i]!.name) ?? 0) + 1);
    }
  });
  const shards =
    sys.tres.shards.length > 1
      ? `; accepted bids credited by shard: ${sys.tres.shards.map((s) => `${s.name} ${byShard.get(s.name) ?? 0}`).join(', ')}`
      : '';
  return {
    name: 'DR credits equal the accepted bids',
    holds: dsmSide === households,
    detail: `${sys.dsm.rounds.size} rounds, accepted q x p = ${dsmSide} micro-units, credited to households = ${households}${shards}`,
  };
}

/** What the households sent against what the TRE stored (and acknowledged). */
export function readingsCheck(sys: SimulatedSystem): { readings: ReadingCounts; invariant: Invariant } {
  const { shards } = sys.tres;
  const homeOf = new Map(sys.households.map((h, i) => [h.id.meterId, sys.homes[i]]));
  const stored = new Map<string, number>();
  let rowCount = 0;
  /** Stored in a shard other than the household's own, or in two shards. */
  let elsewhere = 0;
  let twice = 0;
  for (const shard of shards)
    for (const r of shard.tre.readings.storedEnergies()) {
      rowCount++;
      const key = `${r.meterId}@${r.intervalStart}`;
      if (stored.has(key)) twice++;
      stored.set(key, r.effectiveWh);
      if (homeOf.get(r.meterId) !== shard) elsewhere++;
    }
  let sent = 0;
  let acknowledged = 0;
  let missing = 0;
  let wrong = 0;
  for (const h of sys.households) {
    acknowledged += h.acknowledgedReadings;
    for (const [start, energy] of h.sent) {
      sent++;
      const got = stored.get(`${h.id.meterId}@${start}`);
      if (got === undefined) missing++;
      else if (got !== energy) wrong++;
    }
  }
  // Readings billed, released and past the baseline window are deleted by the TRE's retention:
  // each of them was stored once, so they count as stored, not as missing.
  const deleted = shards.reduce((n, s) => n + s.tre.retention.stats.readings, 0);
  const cluster =
    shards.length > 1
      ? `; over ${shards.length} shards: ${elsewhere} outside the household's own shard, ${twice} in two shards`
      : '';
  return {
    readings: {
      sent,
      acknowledged,
      storedOnce: rowCount,
      missing: missing - deleted,
      duplicated: rowCount - (sent - missing),
    },
    invariant: {
      name: 'every acknowledged reading stored exactly once with the energy sent (or deleted by retention)',
      holds:
        missing === deleted && wrong === 0 && rowCount + deleted === sent && elsewhere === 0 && twice === 0,
      detail: `${sent} sent, ${rowCount} stored, ${deleted} deleted by retention, ${missing - deleted} missing, ${wrong} with other energy${cluster}`,
    },
  };
}

/** No message to the DNO, the supplier or the DSM names a household. */
export function leakInvariant(sys: SimulatedSystem): Invariant {
  const ids = sys.households.map((h) => h.id.meterId);
  const leaks = sys.parties
    .filter((p) => p !== sys.parties[0]) // the regulator registers households by id: that is its job
    .flatMap((p) => p.received)
    .filter((m) => ids.some((id) => m.payload.includes(id) || m.topic.includes(id))).length;
  return {
    name: 'no provider received a household identifier',
    holds: leaks === 0,
    detail: `${leaks} messages to DNO/supplier/DSM contained a meter id`,
  };
}
