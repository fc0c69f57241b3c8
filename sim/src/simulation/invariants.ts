/**
 * What `tre-sim run` checks from outside the TRE, against the simulator's own ground truth: every
 * acknowledged reading stored once with the energy sent, statements and DR credits recomputed, the
 * DP error within its stated bound, no household identifier at any provider.
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
export function dpCheck(sys: Pick<SimulatedSystem, 'dno' | 'groups' | 'opts'>): {
  releases: number;
  outside: number;
  /** Sum over the releases of the true totals, and of what clamping cut off, Wh. */
  trueWh: number;
  clampedOffWh: number;
} {
  let releases = 0;
  let outside = 0;
  let trueWh = 0;
  let clampedOffWh = 0;
  for (const [groupId, list] of sys.dno.releases) {
    const members = sys.groups.get(groupId) ?? [];
    for (const r of list) {
      const truth = trueGroupTotalWh(members, r, sys.opts.intervalMinutes);
      const clamped = clampedGroupTotalWh(members, r, sys.opts.intervalMinutes);
      releases++;
      trueWh += truth;
      clampedOffWh += truth - clamped;
      if (Math.abs(r.noisyTotalWh - clamped) >= r.bound95Wh) outside++;
    }
  }
  return { releases, outside, trueWh, clampedOffWh };
}

/** The DP check as an invariant: at most 5 % outside the bound, with binomial 3-sigma slack. */
export function dpInvariant(sys: SimulatedSystem): Invariant {
  const { releases, outside, trueWh, clampedOffWh } = dpCheck(sys);
  const allowed = releases * 0.05 + 3 * Math.sqrt(releases * 0.05 * 0.95) + 1;
  const bias = trueWh > 0 ? ((100 * clampedOffWh) / trueWh).toFixed(2) : '0.00';
  return {
    name: 'DP error within its stated 95 % bound (binomial 3-sigma slack)',
    holds: releases > 0 && outside <= allowed,
    detail:
      `${releases} releases, ${outside} outside the bound (allowed ${Math.floor(allowed)}); ` +
      `clamping to the contribution bound cut ${clampedOffWh} Wh (${bias} % of the true totals, a bias outside the noise bound)`,
  };
}

/** Each statement equals sum(m x p) recomputed here from what the household sent and the tariff. */
export function billingInvariant(sys: SimulatedSystem): Invariant {
  const byAccount = new Map(sys.households.map((h, i) => [sys.accounts[i]!, h]));
  let checked = 0;
  let wrong = 0;
  let firstWrong = '';
  for (const st of sys.supplier.statements.values()) {
    const h = byAccount.get(st.account);
    if (!h) continue;
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
  return {
    name: 'each statement = sum(m x p) minus DR credits, recomputed by the simulator',
    holds: checked > 0 ? wrong === 0 : sys.opts.days * 24 < 25, // the first statement comes a grace hour after day 1
    detail: `${checked} statements checked, ${wrong} differ${firstWrong}`,
  };
}

/** DR credits the households were told equal the accepted bids the DSM cleared (q x p). */
export function drInvariant(sys: SimulatedSystem): Invariant {
  const dsmSide = [...sys.dsm.rounds.values()]
    .filter((r) => r.accepted.length > 0)
    .reduce((a, r) => a + r.creditMicro, 0);
  const households = sys.households
    .flatMap((h) => h.agent.outcomes.filter((o) => o.outcome === 'accepted'))
    .reduce((a, o) => a - (o.creditMicroMinor ?? 0), 0);
  return {
    name: 'DR credits equal the accepted bids',
    holds: dsmSide === households,
    detail: `${sys.dsm.rounds.size} rounds, accepted q x p = ${dsmSide} micro-units, credited to households = ${households}`,
  };
}

/** What the households sent against what the TRE stored (and acknowledged). */
export function readingsCheck(sys: SimulatedSystem): { readings: ReadingCounts; invariant: Invariant } {
  const rows = sys.tre.readings.storedEnergies();
  const stored = new Map<string, number>();
  for (const r of rows) stored.set(`${r.meterId}@${r.intervalStart}`, r.effectiveWh);
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
  const deleted = sys.tre.retention.stats.readings;
  return {
    readings: {
      sent,
      acknowledged,
      storedOnce: rows.length,
      missing: missing - deleted,
      duplicated: rows.length - (sent - missing),
    },
    invariant: {
      name: 'every acknowledged reading stored exactly once with the energy sent (or deleted by retention)',
      holds: missing === deleted && wrong === 0 && rows.length + deleted === sent,
      detail: `${sent} sent, ${rows.length} stored, ${deleted} deleted by retention, ${missing - deleted} missing, ${wrong} with other energy`,
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
