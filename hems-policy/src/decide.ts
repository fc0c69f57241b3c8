/**
 * The decision: from a policy, a demand-response event and the household's local context to either
 * a bid (quantity, price, which loads to shed and when) or a reason for not bidding. Pure and
 * deterministic: the same inputs always give the same decision; `now` comes from the context.
 * The rules are stated precisely in README.md ("Decision rules").
 */
import type { DecisionContextInput } from './decision-context.js';
import type { DrEvent } from './dr-event.js';
import { localMinute, localMinutes, MINUTE_MS } from './local-time.js';
import type { Load, MinTemperatureRule, Policy } from './policy-schema.js';
import {
  allowedMinutes,
  type MinuteSpan,
  minutesFor,
  ruleApplies,
  shedEnergyWh,
  shedSpans,
} from './shed-schedule.js';

/** The longest event window the policy considers (7 days). */
export const MAX_WINDOW_MINUTES = 7 * 1440;

/** One load switched off for [from, to) (ISO 8601 UTC). */
export interface LoadShed {
  name: string;
  actuator: string;
  from: string;
  to: string;
}

/** What the household offers: energy in Wh at a price in minor units per MWh, by shedding these loads. */
export interface Bid {
  quantityWh: number;
  pricePerMWh: number;
  loads: LoadShed[];
}

export const NO_BID_CODES = [
  'mode-never',
  'bid-deadline-passed',
  'window-over',
  'window-too-long',
  'price-below-minimum',
  'daily-limit-reached',
  'no-sheddable-load',
  'no-baseline-consumption',
] as const;
export type NoBidCode = (typeof NO_BID_CODES)[number];

export const SKIP_CODES = [
  'load-unavailable',
  'comfort-temperature',
  'no-sensor-reading',
  'no-allowed-time',
] as const;
export type SkipCode = (typeof SKIP_CODES)[number];

/** A load of the policy left out of the bid, and why. */
export interface SkippedLoad {
  name: string;
  code: SkipCode;
  message: string;
}

/** Which limit set the bid's quantity (the smallest; ties go to the first in this list). */
export type QuantityLimit = 'loads' | 'requested' | 'per-event' | 'per-day' | 'baseline';

export interface BidDecision {
  kind: 'bid';
  eventId: string;
  bid: Bid;
  /** mode ask-first: the household must approve the bid before it is sent. */
  requiresApproval: boolean;
  limitedBy: QuantityLimit;
  /** What the named loads could shed in the window, before the limits. */
  sheddableWh: number;
  skippedLoads: SkippedLoad[];
}

export interface NoBidDecision {
  kind: 'no-bid';
  eventId: string;
  code: NoBidCode;
  /** One sentence for people. */
  reason: string;
  skippedLoads: SkippedLoad[];
}

export type Decision = BidDecision | NoBidDecision;

interface PlannedShed {
  load: Load;
  span: MinuteSpan;
  energyWh: number;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

function skipForTemperature(
  load: Load,
  rules: readonly MinTemperatureRule[],
  context: DecisionContextInput,
  nowMs: number,
): SkippedLoad | undefined {
  for (const rule of rules) {
    const reading = context.sensors?.[rule.sensor];
    const fresh =
      reading !== undefined && nowMs - Date.parse(reading.at) <= rule.maxReadingAgeMinutes * MINUTE_MS;
    if (fresh && reading.celsius < rule.minCelsius) {
      return {
        name: load.name,
        code: 'comfort-temperature',
        message: `${load.name} is not shed: sensor ${rule.sensor} reads ${reading.celsius} °C, below the minimum of ${rule.minCelsius} °C`,
      };
    }
    if (!fresh && rule.withoutReading === 'never-shed') {
      return {
        name: load.name,
        code: 'no-sensor-reading',
        message: `${load.name} is not shed: no reading from sensor ${rule.sensor} in the last ${rule.maxReadingAgeMinutes} minutes`,
      };
    }
  }
  return undefined;
}

/** The earliest instant the load may start a shed period, given its reported state. */
function earliestShedMs(load: Load, context: DecisionContextInput, nowMs: number): number {
  const state = context.loads?.[load.name];
  const minOn = load.minOnTimeMinutes * MINUTE_MS;
  if (state?.state === 'on') return (state.since === undefined ? nowMs : Date.parse(state.since)) + minOn;
  if (state?.state === 'off') return nowMs + Math.max(minOn, MINUTE_MS);
  return Number.NEGATIVE_INFINITY;
}

/** Average power (W, rounded down) of the recent intervals, or undefined when none are given. */
function baselinePowerW(context: DecisionContextInput): number | undefined {
  const intervals = context.recentConsumption ?? [];
  const minutes = intervals.reduce((sum, i) => sum + i.intervalMinutes, 0);
  if (minutes === 0) return undefined;
  const energyWh = intervals.reduce((sum, i) => sum + i.energyWh, 0);
  return Math.floor((energyWh * 60) / minutes);
}

/** Decide whether and what to bid. Inputs are assumed valid (see `parsePolicy`, `parseEvent`, `parseContext`). */
export function decide(policy: Policy, event: DrEvent, context: DecisionContextInput): Decision {
  const skippedLoads: SkippedLoad[] = [];
  const noBid = (code: NoBidCode, reason: string): NoBidDecision => ({
    kind: 'no-bid',
    eventId: event.eventId,
    code,
    reason,
    skippedLoads,
  });

  if (policy.mode === 'never') return noBid('mode-never', 'this household never bids (mode: never)');

  const nowMs = Date.parse(context.now);
  if (nowMs >= Date.parse(event.bidDeadline))
    return noBid('bid-deadline-passed', `bids closed at ${event.bidDeadline}; it is ${context.now}`);

  const startMs = Math.ceil(Math.max(Date.parse(event.windowStart), nowMs) / MINUTE_MS) * MINUTE_MS;
  const endMs = Math.floor(Date.parse(event.windowEnd) / MINUTE_MS) * MINUTE_MS;
  const windowMinutes = (endMs - startMs) / MINUTE_MS;
  if (windowMinutes <= 0) return noBid('window-over', `the event window ended at ${event.windowEnd}`);
  if (windowMinutes > MAX_WINDOW_MINUTES)
    return noBid('window-too-long', `the event window is longer than ${MAX_WINDOW_MINUTES / 1440} days`);

  if (event.priceCapPerMWh < policy.minPricePerMWh)
    return noBid(
      'price-below-minimum',
      `the event pays at most ${event.priceCapPerMWh} per MWh, below this household's minimum of ${policy.minPricePerMWh} per MWh`,
    );

  const committed = context.committedTodayWh ?? 0;
  const dayRemainingWh = policy.maxReductionWh.perDay - committed;
  if (dayRemainingWh <= 0)
    return noBid(
      'daily-limit-reached',
      `${committed} Wh already committed on ${localMinute(startMs, context.timeZone).date}; the daily maximum is ${policy.maxReductionWh.perDay} Wh`,
    );

  const minutes = localMinutes(startMs, windowMinutes, context.timeZone);
  const temperatureRules = policy.comfort.filter(
    (r): r is MinTemperatureRule => r.rule === 'min-indoor-temperature',
  );
  const planned: PlannedShed[] = [];
  for (const load of policy.loads) {
    if (context.loads?.[load.name]?.state === 'unavailable') {
      skippedLoads.push({
        name: load.name,
        code: 'load-unavailable',
        message: `${load.name} is reported unavailable`,
      });
      continue;
    }
    const skip = skipForTemperature(
      load,
      temperatureRules.filter((r) => ruleApplies(r, load)),
      context,
      nowMs,
    );
    if (skip) {
      skippedLoads.push(skip);
      continue;
    }
    const first = Math.ceil((earliestShedMs(load, context, nowMs) - startMs) / MINUTE_MS);
    const spans = shedSpans(allowedMinutes(load, policy.comfort, minutes), first, load)
      .map((span) => ({ load, span, energyWh: shedEnergyWh(load.typicalPowerW, span.end - span.start) }))
      .filter((p) => p.energyWh > 0);
    if (spans.length === 0) {
      skippedLoads.push({
        name: load.name,
        code: 'no-allowed-time',
        message: `${load.name} may not be shed at any time in the window (its allowed windows, blocked hours and minimum on-time leave none)`,
      });
      continue;
    }
    planned.push(...spans);
  }

  const sheddableWh = planned.reduce((sum, p) => sum + p.energyWh, 0);
  if (sheddableWh === 0)
    return noBid(
      'no-sheddable-load',
      `no load may be shed between ${iso(startMs)} and ${iso(endMs)}${skippedLoads.length ? `: ${skippedLoads.map((s) => s.message).join('; ')}` : ''}`,
    );

  const avgW = baselinePowerW(context);
  const limits: [QuantityLimit, number][] = [
    ['loads', sheddableWh],
    ['requested', event.requestedReductionWh],
    ['per-event', policy.maxReductionWh.perEvent],
    ['per-day', dayRemainingWh],
  ];
  if (avgW !== undefined) limits.push(['baseline', shedEnergyWh(avgW, windowMinutes)]);
  let [limitedBy, quantityWh] = limits[0]!;
  for (const [name, value] of limits) {
    if (value < quantityWh) [limitedBy, quantityWh] = [name, value];
  }
  if (quantityWh <= 0)
    return noBid(
      'no-baseline-consumption',
      `recent consumption averages ${avgW} W, too little to reduce over the window`,
    );

  const loads: LoadShed[] = [];
  let remainingWh = quantityWh;
  for (const p of planned) {
    if (remainingWh <= 0) break;
    const length =
      p.energyWh <= remainingWh ? p.span.end - p.span.start : minutesFor(p.load.typicalPowerW, remainingWh);
    remainingWh -= shedEnergyWh(p.load.typicalPowerW, length);
    loads.push({
      name: p.load.name,
      actuator: p.load.actuator,
      from: iso(startMs + p.span.start * MINUTE_MS),
      to: iso(startMs + (p.span.start + length) * MINUTE_MS),
    });
  }

  return {
    kind: 'bid',
    eventId: event.eventId,
    bid: { quantityWh, pricePerMWh: policy.minPricePerMWh, loads },
    requiresApproval: policy.mode === 'ask-first',
    limitedBy,
    sheddableWh,
    skippedLoads,
  };
}
