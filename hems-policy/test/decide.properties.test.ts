/**
 * Invariants of `decide` over random policies, events and contexts. The checks use their own
 * local-time oracle (one `Intl` call per minute) rather than the code under test.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { decide, NO_BID_CODES } from '../src/decide.js';
import type { DecisionContextInput } from '../src/decision-context.js';
import type { DrEvent } from '../src/dr-event.js';
import { type Policy, policySchema } from '../src/policy-schema.js';
import { validatePolicy } from '../src/validate.js';
import { policyArb, scenarioArb } from './arbitraries.js';

const MINUTE = 60_000;
const RUNS = 300;

const oracles = new Map<string, Intl.DateTimeFormat>();
function wallClock(ms: number, timeZone: string): { day: string; minute: number } {
  let f = oracles.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-GB', {
      timeZone,
      weekday: 'long',
      hour: 'numeric',
      minute: 'numeric',
      hourCycle: 'h23',
    });
    oracles.set(timeZone, f);
  }
  const parts = Object.fromEntries(f.formatToParts(ms).map((p) => [p.type, p.value]));
  return {
    day: parts.weekday!.slice(0, 3).toLowerCase(),
    minute: Number(parts.hour) * 60 + Number(parts.minute),
  };
}

function inWindow(
  w: { days?: string[] | undefined; from: string; to: string },
  at: { day: string; minute: number },
) {
  const m = (t: string) => Number(t.slice(0, 2)) * 60 + Number(t.slice(3));
  return (w.days === undefined || w.days.includes(at.day)) && m(w.from) <= at.minute && at.minute < m(w.to);
}

function check(policy: Policy, event: DrEvent, context: DecisionContextInput): void {
  const decision = decide(policy, event, context);
  const now = Date.parse(context.now);

  if (policy.mode === 'never') expect(decision).toMatchObject({ kind: 'no-bid', code: 'mode-never' });
  if (now >= Date.parse(event.bidDeadline)) expect(decision.kind).toBe('no-bid');
  if (decision.kind === 'no-bid') {
    expect(NO_BID_CODES).toContain(decision.code);
    expect(decision.reason.length).toBeGreaterThan(0);
    return;
  }
  if (policy.mode === 'never') throw new Error('unreachable');
  const { bid } = decision;
  expect(decision.requiresApproval).toBe(policy.mode === 'ask-first');

  // Price: never below the household's minimum, never above the event's cap.
  expect(bid.pricePerMWh).toBeGreaterThanOrEqual(policy.minPricePerMWh);
  expect(bid.pricePerMWh).toBeLessThanOrEqual(event.priceCapPerMWh);
  expect(Number.isInteger(bid.quantityWh) && Number.isInteger(bid.pricePerMWh)).toBe(true);

  // Quantity: positive, within every limit.
  const committed = context.committedTodayWh ?? 0;
  expect(bid.quantityWh).toBeGreaterThanOrEqual(1);
  expect(bid.quantityWh).toBeLessThanOrEqual(policy.maxReductionWh.perEvent);
  expect(bid.quantityWh).toBeLessThanOrEqual(policy.maxReductionWh.perDay - committed);
  expect(bid.quantityWh).toBeLessThanOrEqual(event.requestedReductionWh);
  const effectiveStart = Math.ceil(Math.max(Date.parse(event.windowStart), now) / MINUTE) * MINUTE;
  const effectiveEnd = Math.floor(Date.parse(event.windowEnd) / MINUTE) * MINUTE;
  const recent = context.recentConsumption ?? [];
  if (recent.length > 0) {
    const avgW = Math.floor(
      (recent.reduce((s, r) => s + r.energyWh, 0) * 60) / recent.reduce((s, r) => s + r.intervalMinutes, 0),
    );
    expect(bid.quantityWh).toBeLessThanOrEqual(
      Math.floor((avgW * (effectiveEnd - effectiveStart)) / MINUTE / 60),
    );
  }

  // Never more than the named loads can shed in their listed periods.
  let listedWh = 0;
  const byLoad = new Map<string, { from: number; to: number }[]>();
  for (const shed of bid.loads) {
    const load = policy.loads.find((l) => l.name === shed.name);
    expect(load, `${shed.name} is a load of the policy`).toBeDefined();
    if (!load) return;
    expect(shed.actuator).toBe(load.actuator);
    const from = Date.parse(shed.from);
    const to = Date.parse(shed.to);
    expect(from % MINUTE).toBe(0);
    expect(to % MINUTE).toBe(0);
    expect(from).toBeLessThan(to);
    expect(from).toBeGreaterThanOrEqual(effectiveStart);
    expect(to).toBeLessThanOrEqual(effectiveEnd);
    const minutes = (to - from) / MINUTE;
    expect(minutes).toBeLessThanOrEqual(load.maxOffMinutes);
    listedWh += Math.floor((minutes * load.typicalPowerW) / 60);

    // Every minute inside the load's allowed windows and outside its blocked hours (local time).
    const blocked = policy.comfort.filter(
      (r) => r.rule === 'blocked-hours' && (r.loads === undefined || r.loads.includes(load.name)),
    );
    for (let t = from; t < to; t += MINUTE) {
      const at = wallClock(t, context.timeZone);
      expect(load.allowedWindows.some((w) => inWindow(w, at))).toBe(true);
      for (const rule of blocked) if (rule.rule === 'blocked-hours') expect(inWindow(rule, at)).toBe(false);
    }

    // Load state: unavailable loads are never named; min on-time before the first shed.
    const state = context.loads?.[load.name];
    expect(state?.state).not.toBe('unavailable');
    if (state?.state === 'on')
      expect(from).toBeGreaterThanOrEqual(
        (state.since ? Date.parse(state.since) : now) + load.minOnTimeMinutes * MINUTE,
      );
    if (state?.state === 'off')
      expect(from).toBeGreaterThanOrEqual(now + Math.max(1, load.minOnTimeMinutes) * MINUTE);

    // Temperature comfort rules.
    for (const rule of policy.comfort) {
      if (rule.rule !== 'min-indoor-temperature' || (rule.loads && !rule.loads.includes(load.name))) continue;
      const reading = context.sensors?.[rule.sensor];
      const fresh =
        reading !== undefined && now - Date.parse(reading.at) <= rule.maxReadingAgeMinutes * MINUTE;
      if (fresh) expect(reading.celsius).toBeGreaterThanOrEqual(rule.minCelsius);
      else expect(rule.withoutReading).toBe('allow-shedding');
    }
    byLoad.set(load.name, [...(byLoad.get(load.name) ?? []), { from, to }]);
  }
  expect(bid.quantityWh).toBeLessThanOrEqual(listedWh);

  // Between two sheds of one load, it is back on for at least its minimum on-time.
  for (const [name, periods] of byLoad) {
    const minOn = policy.loads.find((l) => l.name === name)!.minOnTimeMinutes * MINUTE;
    const sorted = [...periods].sort((a, b) => a.from - b.from);
    for (let i = 1; i < sorted.length; i++)
      expect(sorted[i]!.from - sorted[i - 1]!.to).toBeGreaterThanOrEqual(Math.max(minOn, 1));
  }

  // The quantity is the smallest limit: nothing is held back without a reason.
  expect(decision.sheddableWh).toBeGreaterThanOrEqual(bid.quantityWh);
}

describe('decide: invariants over random policies, events and contexts', () => {
  it('never breaks a limit, a price bound, a window, a comfort rule or a load constraint', () => {
    fc.assert(
      fc.property(scenarioArb, ({ policy, event, context }) => {
        check(policySchema.parse(policy), event, context);
      }),
      { numRuns: RUNS },
    );
  });

  it('is deterministic and does not change its inputs', () => {
    fc.assert(
      fc.property(scenarioArb, ({ policy, event, context }) => {
        const parsed = policySchema.parse(policy);
        const before = JSON.stringify([parsed, event, context]);
        const first = decide(parsed, event, context);
        const again = decide(structuredClone(parsed), structuredClone(event), structuredClone(context));
        expect(again).toEqual(first);
        expect(JSON.stringify([parsed, event, context])).toBe(before);
      }),
      { numRuns: 100 },
    );
  });

  it('bids in a good share of the generated scenarios (the invariants are not vacuous)', () => {
    const samples = fc.sample(scenarioArb, { numRuns: 400, seed: 42 });
    const kinds = samples.map(({ policy, event, context }) =>
      decide(policySchema.parse(policy), event, context),
    );
    const bids = kinds.filter((d) => d.kind === 'bid');
    expect(bids.length).toBeGreaterThan(samples.length / 10);
    expect(bids.some((d) => d.kind === 'bid' && d.bid.loads.length > 1)).toBe(true);
    const codes = new Set(kinds.flatMap((d) => (d.kind === 'no-bid' ? [d.code] : [])));
    expect(codes.size).toBeGreaterThanOrEqual(5);
  });

  it('offers everything its limits allow: the quantity is the smallest of the limits', () => {
    fc.assert(
      fc.property(scenarioArb, ({ policy, event, context }) => {
        const parsed = policySchema.parse(policy);
        const d = decide(parsed, event, context);
        if (d.kind !== 'bid' || parsed.mode === 'never') return;
        const limits = [
          d.sheddableWh,
          event.requestedReductionWh,
          parsed.maxReductionWh.perEvent,
          parsed.maxReductionWh.perDay - (context.committedTodayWh ?? 0),
        ];
        expect(d.bid.quantityWh).toBeLessThanOrEqual(Math.min(...limits));
        if (d.limitedBy !== 'baseline') expect(d.bid.quantityWh).toBe(Math.min(...limits));
      }),
      { numRuns: 100 },
    );
  });
});

describe('policy files: random valid policies', () => {
  it('round-trip through YAML and validation unchanged', () => {
    fc.assert(
      fc.property(policyArb, (policy) => {
        const check = validatePolicy(stringify(policy), 'random.yaml');
        expect(check.ok ? [] : check.problems.map((p) => p.message)).toEqual([]);
        if (check.ok) expect(check.value).toEqual(policySchema.parse(policy));
      }),
      { numRuns: 200 },
    );
  });
});
