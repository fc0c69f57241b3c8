/** fast-check generators of valid policies, events and contexts, for the property tests. */
import fc from 'fast-check';
import type { DecisionContextInput } from '../src/decision-context.js';
import type { DrEvent } from '../src/dr-event.js';
import { type PolicyInput, WEEKDAYS, type Weekday } from '../src/policy-schema.js';

const MINUTE = 60_000;

export const TIME_ZONES = [
  'UTC',
  'Europe/London',
  'Europe/Amsterdam',
  'America/New_York',
  'Asia/Kathmandu',
  'Australia/Lord_Howe',
  'Pacific/Chatham',
] as const;

/** Days near daylight-saving changes in several zones, and ordinary days. */
const BASE_DAYS = [
  '2026-01-14T00:00:00Z',
  '2026-03-08T00:00:00Z',
  '2026-03-28T12:00:00Z',
  '2026-04-04T00:00:00Z',
  '2026-07-01T00:00:00Z',
  '2026-09-26T12:00:00Z',
  '2026-10-24T12:00:00Z',
  '2026-11-01T00:00:00Z',
].map(Date.parse);

const LOAD_NAMES = ['ev-charger', 'heat-pump', 'washing-machine', 'dishwasher', 'boiler'];
const SENSORS = ['indoor', 'living-room'];

export function hhmm(minute: number): string {
  return `${String(Math.floor(minute / 60)).padStart(2, '0')}:${String(minute % 60).padStart(2, '0')}`;
}

export function iso(ms: number): string {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

interface WindowInput {
  days?: Weekday[];
  from: string;
  to: string;
}

const daysArb = fc.option(fc.subarray([...WEEKDAYS], { minLength: 1 }), { nil: undefined });

const windowArb: fc.Arbitrary<WindowInput> = fc
  .record({
    days: daysArb,
    // Often on the quarter hour, sometimes on any minute.
    from: fc.oneof(
      fc.integer({ min: 0, max: 95 }).map((q) => q * 15),
      fc.integer({ min: 0, max: 1439 }),
    ),
    length: fc.oneof(fc.integer({ min: 1, max: 1440 }), fc.integer({ min: 360, max: 1440 })),
  })
  .map(({ days, from, length }) => ({
    ...(days ? { days } : {}),
    from: hhmm(from),
    to: hhmm(Math.min(1440, from + length)),
  }));

function minutes(t: string): number {
  return Number(t.slice(0, 2)) * 60 + Number(t.slice(3));
}

function overlaps(a: WindowInput, b: WindowInput): boolean {
  const shared = (a.days ?? WEEKDAYS).some((d) => (b.days ?? WEEKDAYS).includes(d));
  return shared && Math.max(minutes(a.from), minutes(b.from)) < Math.min(minutes(a.to), minutes(b.to));
}

/** Non-overlapping windows: later windows that overlap a kept one are dropped. */
const windowsArb = fc.array(windowArb, { minLength: 1, maxLength: 4 }).map((ws) => {
  const kept: WindowInput[] = [];
  for (const w of ws) if (!kept.some((k) => overlaps(k, w))) kept.push(w);
  return kept;
});

const loadsArb = fc
  .uniqueArray(fc.integer({ min: 0, max: LOAD_NAMES.length - 1 }), { minLength: 1, maxLength: 3 })
  .chain((indexes) =>
    fc.tuple(
      ...indexes.map((i) =>
        fc.record({
          name: fc.constant(LOAD_NAMES[i]!),
          typicalPowerW: fc.oneof(fc.integer({ min: 1, max: 120 }), fc.integer({ min: 100, max: 11_000 })),
          actuator: fc.constant(`relay:${i + 2}`),
          minOnTimeMinutes: fc.integer({ min: 0, max: 90 }),
          maxOffMinutes: fc.integer({ min: 1, max: 240 }),
          allowedWindows: windowsArb,
        }),
      ),
    ),
  );

function comfortArb(names: string[]) {
  const ruleLoads = fc.option(fc.subarray(names, { minLength: 1 }), { nil: undefined });
  const blocked = fc.record({ loads: ruleLoads, window: windowArb }).map(({ loads, window }) => ({
    rule: 'blocked-hours' as const,
    ...(loads ? { loads } : {}),
    ...window,
  }));
  const temperature = fc
    .record({
      loads: ruleLoads,
      sensor: fc.constantFrom(...SENSORS),
      minCelsius: fc.integer({ min: -50, max: 250 }).map((t) => t / 10),
      maxReadingAgeMinutes: fc.integer({ min: 1, max: 180 }),
      withoutReading: fc.constantFrom('allow-shedding' as const, 'never-shed' as const),
    })
    .map(({ loads, ...rest }) => ({
      rule: 'min-indoor-temperature' as const,
      ...(loads ? { loads } : {}),
      ...rest,
    }));
  return fc.array(fc.oneof(blocked, temperature), { maxLength: 3 });
}

export const policyArb: fc.Arbitrary<PolicyInput> = fc
  .record({
    mode: fc.oneof(
      { arbitrary: fc.constant('auto-bid' as const), weight: 5 },
      { arbitrary: fc.constant('ask-first' as const), weight: 3 },
      { arbitrary: fc.constant('never' as const), weight: 1 },
    ),
    minPricePerMWh: fc.integer({ min: 0, max: 100_000 }),
    perEvent: fc.integer({ min: 1, max: 20_000 }),
    extraPerDay: fc.integer({ min: 0, max: 20_000 }),
    loads: loadsArb,
  })
  .chain((p) =>
    comfortArb(p.loads.map((l) => l.name)).map(
      (comfort): PolicyInput => ({
        mode: p.mode,
        minPricePerMWh: p.minPricePerMWh,
        maxReductionWh: { perEvent: p.perEvent, perDay: p.perEvent + p.extraPerDay },
        loads: p.loads,
        comfort,
      }),
    ),
  );

export const eventArb: fc.Arbitrary<DrEvent> = fc
  .record({
    base: fc.constantFrom(...BASE_DAYS),
    startMinute: fc.integer({ min: 0, max: 48 * 60 }),
    seconds: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 59 })),
    length: fc.integer({ min: 1, max: 6 * 60 }),
    deadlineBefore: fc.integer({ min: -30, max: 60 }),
    requestedReductionWh: fc.integer({ min: 1, max: 30_000 }),
    priceCapPerMWh: fc.oneof(
      fc.integer({ min: 0, max: 250_000 }),
      fc.integer({ min: 100_000, max: 250_000 }),
    ),
  })
  .map((e) => {
    const start = e.base + e.startMinute * MINUTE + e.seconds * 1000;
    return {
      eventId: 'ev-1',
      windowStart: iso(start),
      windowEnd: iso(start + e.length * MINUTE),
      bidDeadline: iso(start - e.deadlineBefore * MINUTE),
      requestedReductionWh: e.requestedReductionWh,
      priceCapPerMWh: e.priceCapPerMWh,
    };
  });

/** A context for `event`: now from 10 hours before the window to shortly inside it. */
export function contextArb(event: DrEvent): fc.Arbitrary<DecisionContextInput> {
  const start = Date.parse(event.windowStart);
  const instantNear = (ms: number) => fc.integer({ min: -300, max: 60 }).map((m) => iso(ms + m * MINUTE));
  return fc
    .record({
      timeZone: fc.constantFrom(...TIME_ZONES),
      nowMinute: fc.oneof(
        { arbitrary: fc.integer({ min: -600, max: -31 }), weight: 4 },
        { arbitrary: fc.integer({ min: -600, max: 90 }), weight: 1 },
      ),
      committedTodayWh: fc.option(fc.integer({ min: 0, max: 10_000 }), { nil: undefined }),
      recentConsumption: fc.option(
        fc.array(
          fc.record({
            intervalMinutes: fc.constantFrom(15, 30),
            energyWh: fc.integer({ min: 0, max: 3000 }),
          }),
          { maxLength: 4 },
        ),
        { nil: undefined },
      ),
      states: fc.dictionary(
        fc.constantFrom(...LOAD_NAMES),
        fc.record({
          state: fc.constantFrom('on' as const, 'off' as const, 'unavailable' as const),
          withSince: fc.boolean(),
        }),
        { maxKeys: 3 },
      ),
      sensors: fc.dictionary(
        fc.constantFrom(...SENSORS),
        fc.record({
          celsius: fc.integer({ min: 0, max: 300 }).map((t) => t / 10),
          ageMinutes: fc.integer({ min: -5, max: 240 }),
        }),
        { maxKeys: 2 },
      ),
    })
    .chain((c) => {
      const now = start + c.nowMinute * MINUTE;
      return fc
        .tuple(...Object.keys(c.states).map(() => instantNear(now)))
        .map((sinces): DecisionContextInput => {
          const loads: NonNullable<DecisionContextInput['loads']> = {};
          Object.entries(c.states).forEach(([name, s], i) => {
            loads[name] = { state: s.state, ...(s.withSince ? { since: sinces[i]! } : {}) };
          });
          const sensors: NonNullable<DecisionContextInput['sensors']> = {};
          for (const [name, r] of Object.entries(c.sensors))
            sensors[name] = { celsius: r.celsius, at: iso(now - r.ageMinutes * MINUTE) };
          return {
            timeZone: c.timeZone,
            now: iso(now),
            ...(c.committedTodayWh === undefined ? {} : { committedTodayWh: c.committedTodayWh }),
            ...(c.recentConsumption === undefined
              ? {}
              : {
                  recentConsumption: c.recentConsumption.map((r, i) => ({
                    intervalStart: iso(now - (i + 1) * 30 * MINUTE),
                    ...r,
                  })),
                }),
            loads,
            sensors,
          };
        });
    });
}

/** A policy, an event and a context for it. */
export const scenarioArb = fc
  .tuple(policyArb, eventArb)
  .chain(([policy, event]) => contextArb(event).map((context) => ({ policy, event, context })));
