/**
 * The household bidding policy: one zod schema is the source of truth for the TypeScript types, the
 * validation messages and the published JSON Schema (`policy.schema.json`).
 *
 * Every leaf carries its own "must ..." message so a validation error can say what would be valid.
 */
import { z } from 'zod';

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export type Weekday = (typeof WEEKDAYS)[number];
export const MODES = ['auto-bid', 'ask-first', 'never'] as const;
export type Mode = (typeof MODES)[number];

/** Upper bounds that keep every product of quantities well inside the safe-integer range. */
export const MAX_POWER_W = 1_000_000;
export const MAX_ENERGY_WH = 1_000_000_000;
export const MAX_PRICE_PER_MWH = 1_000_000_000;
const MINUTES_PER_DAY = 1440;

/** A z.strictObject whose unknown-key error lists the valid keys (read back by the issue formatter). */
export function strictObject<T extends z.core.$ZodLooseShape>(shape: T) {
  const keys = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `valid keys: ${keys}`
        : issue.code === 'invalid_type'
          ? 'must be a mapping (key: value lines)'
          : undefined,
  });
}

function integer(min: number, max: number, what: string) {
  const error = `must be ${what}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}

const positiveWh = integer(1, MAX_ENERGY_WH, 'a positive integer').meta({
  description: 'Energy in whole watt-hours (Wh), at least 1.',
});
export const pricePerMWh = integer(0, MAX_PRICE_PER_MWH, 'a non-negative integer').meta({
  description: 'Integer minor currency units (pence, cents) per MWh: 24.5 p/kWh is 24500.',
});

/** "HH:MM" on a 24-hour clock; "24:00" is the end of the day. */
export const clockTime = z
  .string({ error: 'must be a time "HH:MM" between "00:00" and "24:00" (quote it in YAML)' })
  .regex(/^(?:(?:[01]\d|2[0-3]):[0-5]\d|24:00)$/, {
    error: 'must be a time "HH:MM" between "00:00" and "24:00" (quote it in YAML)',
  });

/** Minutes since local midnight of an "HH:MM" string already checked by `clockTime`. */
export function minuteOfDay(time: string): number {
  return Number(time.slice(0, 2)) * 60 + Number(time.slice(3, 5));
}

const weekday = z.enum(WEEKDAYS, {
  error: `must be one of ${WEEKDAYS.join(', ')}`,
});
const days = z
  .array(weekday, { error: `must be a list of weekdays (${WEEKDAYS.join(', ')})` })
  .min(1, { error: 'must list at least one weekday' })
  .superRefine((list, ctx) => {
    list.forEach((d, i) => {
      if (list.indexOf(d) !== i)
        ctx.addIssue({ code: 'custom', path: [i], input: d, message: `lists ${d} twice` });
    });
  })
  .meta({ description: 'Weekdays (local time) this applies to; every day when omitted.' });

/** A daily local time window [from, to) on some weekdays; it cannot cross midnight. */
export const timeWindowShape = {
  days: days.optional(),
  from: clockTime.meta({ description: 'Start, local time "HH:MM" (inclusive).' }),
  to: clockTime.meta({ description: 'End, local time "HH:MM" (exclusive); "24:00" for midnight.' }),
};

function windowOrder(w: { from: string; to: string }, ctx: z.RefinementCtx): void {
  if (minuteOfDay(w.to) <= minuteOfDay(w.from)) {
    ctx.addIssue({
      code: 'custom',
      path: ['to'],
      input: w.to,
      message: `must be after from (${w.from}); a window cannot cross midnight, so split it in two, e.g. ${w.from}-24:00 and 00:00-${w.to}`,
    });
  }
}

export const timeWindowSchema = strictObject(timeWindowShape).superRefine(windowOrder).meta({
  id: 'TimeWindow',
  description: 'A local time window on some weekdays, e.g. {days: [mon, fri], from: "16:00", to: "22:00"}.',
});
export type TimeWindow = z.output<typeof timeWindowSchema>;

export const loadName = z
  .string({ error: 'must be a load name (lowercase letters, digits and -)' })
  .regex(/^[a-z0-9][a-z0-9-]{0,39}$/, {
    error: 'must be a load name: 1-40 lowercase letters, digits and -, starting with a letter or digit',
  });

function overlappingWindows(windows: TimeWindow[], ctx: z.RefinementCtx): void {
  windows.forEach((w, j) => {
    for (let i = 0; i < j; i++) {
      const v = windows[i]!;
      const shared = WEEKDAYS.filter(
        (d) => (w.days ?? WEEKDAYS).includes(d) && (v.days ?? WEEKDAYS).includes(d),
      );
      const overlap =
        Math.max(minuteOfDay(w.from), minuteOfDay(v.from)) < Math.min(minuteOfDay(w.to), minuteOfDay(v.to));
      if (shared.length > 0 && overlap) {
        ctx.addIssue({
          code: 'custom',
          path: ['allowedWindows', j],
          input: w,
          message: `overlaps allowedWindows[${i}] on ${shared.join(', ')} (${v.from}-${v.to} and ${w.from}-${w.to}); merge them into one window`,
        });
        return;
      }
    }
  });
}

export const loadSchema = strictObject({
  name: loadName.meta({ description: 'A short name for the load, e.g. ev-charger; unique in the policy.' }),
  typicalPowerW: integer(1, MAX_POWER_W, 'a positive integer (watts)').meta({
    description: 'What the load typically draws while running, in whole watts.',
  }),
  actuator: z
    .string({ error: 'must be an actuator reference such as relay:17' })
    .regex(/^[A-Za-z0-9][A-Za-z0-9:._/-]{0,99}$/, {
      error: 'must be an actuator reference such as relay:17 (letters, digits and : . _ / -)',
    })
    .meta({ description: 'How the agent switches the load, e.g. relay:17 (relay board pin 17).' }),
  minOnTimeMinutes: integer(0, MINUTES_PER_DAY, 'a whole number of minutes from 0 to 1440')
    .default(0)
    .meta({ description: 'Once back on, the load stays on at least this long before it is shed again.' }),
  maxOffMinutes: integer(1, MINUTES_PER_DAY, 'a whole number of minutes from 1 to 1440').meta({
    description: 'The longest the load may be kept off in one go.',
  }),
  allowedWindows: z
    .array(timeWindowSchema, { error: 'must be a list of time windows' })
    .min(1, { error: 'must list at least one time window' })
    .meta({ description: 'When (local time) the load may be shed; never outside these windows.' }),
})
  .superRefine((load, ctx) => overlappingWindows(load.allowedWindows, ctx))
  .meta({ id: 'Load', description: 'A load the home energy manager may switch off during an event.' });
export type Load = z.output<typeof loadSchema>;

const ruleLoads = z
  .array(loadName, { error: 'must be a list of load names' })
  .min(1, { error: 'must list at least one load' })
  .meta({ description: 'The loads this rule protects; every load when omitted.' });

export const minTemperatureRuleSchema = strictObject({
  rule: z.literal('min-indoor-temperature'),
  loads: ruleLoads.optional(),
  sensor: z
    .string({ error: 'must be a sensor name' })
    .min(1, { error: 'must be a sensor name' })
    .max(64, { error: 'must be a sensor name of at most 64 characters' })
    .meta({ description: 'The sensor whose reading (degrees Celsius) the context supplies.' }),
  minCelsius: z
    .number({ error: 'must be a temperature in degrees Celsius' })
    .min(-30, { error: 'must be a temperature from -30 to 40 degrees Celsius' })
    .max(40, { error: 'must be a temperature from -30 to 40 degrees Celsius' })
    .meta({ description: 'Never shed while the reading is below this.' }),
  maxReadingAgeMinutes: integer(1, MINUTES_PER_DAY, 'a whole number of minutes from 1 to 1440')
    .default(60)
    .meta({ description: 'An older reading counts as no reading.' }),
  withoutReading: z
    .enum(['allow-shedding', 'never-shed'], { error: 'must be one of allow-shedding, never-shed' })
    .default('allow-shedding')
    .meta({ description: 'What to do when no fresh reading is available.' }),
}).meta({
  id: 'MinIndoorTemperatureRule',
  description: 'Never shed the loads while the indoor temperature is below minCelsius.',
});

export const blockedHoursRuleSchema = strictObject({
  rule: z.literal('blocked-hours'),
  loads: ruleLoads.optional(),
  ...timeWindowShape,
})
  .superRefine(windowOrder)
  .meta({ id: 'BlockedHoursRule', description: 'Never shed the loads in this local time window.' });

export const comfortRuleSchema = z
  .discriminatedUnion('rule', [minTemperatureRuleSchema, blockedHoursRuleSchema])
  .meta({ description: 'A comfort rule: a time or temperature when loads are never shed.' });
export type ComfortRule = z.output<typeof comfortRuleSchema>;
export type MinTemperatureRule = z.output<typeof minTemperatureRuleSchema>;
export type BlockedHoursRule = z.output<typeof blockedHoursRuleSchema>;

const reductionLimits = strictObject({
  perEvent: positiveWh.meta({ description: 'Most Wh offered in one event.' }),
  perDay: positiveWh.meta({ description: 'Most Wh committed in one local calendar day.' }),
}).meta({ id: 'ReductionLimits', description: 'The most reduction the household offers.' });

const loads = z
  .array(loadSchema, { error: 'must be a list of loads' })
  .meta({ description: 'Sheddable loads, in priority order: the first is shed first.' });
const comfort = z
  .array(comfortRuleSchema, { error: 'must be a list of comfort rules' })
  .default([])
  .meta({ description: 'Comfort rules that no bid may break.' });
const minPrice = pricePerMWh.meta({
  description: 'The lowest price accepted, integer minor currency units per MWh (24.5 p/kWh = 24500).',
});

const biddingPolicySchema = strictObject({
  mode: z.enum(['auto-bid', 'ask-first']).meta({
    description:
      'auto-bid: bid without asking; ask-first: the household approves each bid; never: never bid.',
  }),
  minPricePerMWh: minPrice,
  maxReductionWh: reductionLimits,
  loads: loads.min(1, { error: 'must list at least one load (or set mode: never)' }),
  comfort,
});

const neverPolicySchema = strictObject({
  mode: z.literal('never').meta({ description: 'never: this household never bids.' }),
  minPricePerMWh: minPrice.optional(),
  maxReductionWh: reductionLimits.optional(),
  loads: loads.default([]),
  comfort,
});

function crossChecks(
  policy: {
    maxReductionWh?: { perEvent: number; perDay: number } | undefined;
    loads: Load[];
    comfort: ComfortRule[];
  },
  ctx: z.RefinementCtx,
): void {
  const limits = policy.maxReductionWh;
  if (limits && limits.perEvent > limits.perDay) {
    ctx.addIssue({
      code: 'custom',
      path: ['maxReductionWh', 'perEvent'],
      input: limits.perEvent,
      message: `must not exceed maxReductionWh.perDay (${limits.perDay})`,
    });
  }
  const names = policy.loads.map((l) => l.name);
  const actuators = policy.loads.map((l) => l.actuator);
  policy.loads.forEach((load, i) => {
    if (names.indexOf(load.name) !== i)
      ctx.addIssue({
        code: 'custom',
        path: ['loads', i, 'name'],
        input: load.name,
        message: 'must be unique',
      });
    if (actuators.indexOf(load.actuator) !== i)
      ctx.addIssue({
        code: 'custom',
        path: ['loads', i, 'actuator'],
        input: load.actuator,
        message: `must be unique (loads[${actuators.indexOf(load.actuator)}] uses it)`,
      });
  });
  policy.comfort.forEach((rule, i) => {
    rule.loads?.forEach((name, j) => {
      if (!names.includes(name))
        ctx.addIssue({
          code: 'custom',
          path: ['comfort', i, 'loads', j],
          input: name,
          message: `must name a load of this policy (${names.join(', ') || 'none listed'})`,
        });
    });
  });
}

export const policySchema = z
  .discriminatedUnion('mode', [biddingPolicySchema, neverPolicySchema], {
    error: (issue) =>
      (issue.code as string) === 'invalid_type'
        ? 'must be a mapping (key: value lines)'
        : `must be one of ${MODES.join(', ')}`,
  })
  .superRefine(crossChecks)
  .meta({
    title: 'Household demand-response bidding policy (hems-policy)',
    description:
      'What the home energy manager may offer in a demand-response event. See hems-policy/README.md.',
  });

/** A validated policy (defaults filled in). */
export type Policy = z.output<typeof policySchema>;
/** A policy as written in the file (defaults may be omitted). */
export type PolicyInput = z.input<typeof policySchema>;
