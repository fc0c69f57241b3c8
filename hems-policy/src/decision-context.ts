/**
 * What the household knows when it decides: where it is (time zone), when it is (`now`; domain code
 * never reads the system clock), what it has drawn recently, what its loads and sensors report, and
 * how much reduction it has already committed for the event's day.
 */
import { z } from 'zod';
import { instant } from './dr-event.js';
import { MAX_ENERGY_WH, strictObject } from './policy-schema.js';

/** Whether `Intl` knows the IANA time zone name. */
export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

const wh = z
  .int({ error: 'must be a non-negative integer (Wh)' })
  .min(0, { error: 'must be a non-negative integer (Wh)' })
  .max(MAX_ENERGY_WH, { error: 'must be a non-negative integer (Wh)' });

export const loadStateSchema = strictObject({
  state: z.enum(['on', 'off', 'unavailable'], { error: 'must be one of on, off, unavailable' }),
  since: instant.optional(),
});
export type LoadState = z.output<typeof loadStateSchema>;

export const sensorReadingSchema = strictObject({
  celsius: z.number({ error: 'must be a temperature in degrees Celsius' }),
  at: instant,
});
export type SensorReading = z.output<typeof sensorReadingSchema>;

export const consumptionIntervalSchema = strictObject({
  intervalStart: instant,
  intervalMinutes: z
    .int({ error: 'must be a whole number of minutes from 1 to 1440' })
    .min(1, { error: 'must be a whole number of minutes from 1 to 1440' })
    .max(1440, { error: 'must be a whole number of minutes from 1 to 1440' }),
  energyWh: wh,
});
export type ConsumptionInterval = z.output<typeof consumptionIntervalSchema>;

export const decisionContextSchema = strictObject({
  timeZone: z
    .string({ error: 'must be an IANA time zone such as Europe/London' })
    .refine(isTimeZone, { error: 'must be an IANA time zone such as Europe/London' }),
  now: instant,
  /** Reduction already committed (bid or accepted) for the local calendar day the event starts on. */
  committedTodayWh: wh.default(0),
  /** Recent intervals comparable to the event window; their average power bounds the bid. */
  recentConsumption: z.array(consumptionIntervalSchema, { error: 'must be a list of intervals' }).default([]),
  /** Load states by load name; a load not listed is assumed sheddable. */
  loads: z
    .record(z.string(), loadStateSchema, { error: 'must be a mapping of load name to state' })
    .default({}),
  /** Sensor readings by sensor name. */
  sensors: z
    .record(z.string(), sensorReadingSchema, { error: 'must be a mapping of sensor name to reading' })
    .default({}),
});

/** The local context of a decision (defaults filled in). */
export type DecisionContext = z.output<typeof decisionContextSchema>;
export type DecisionContextInput = z.input<typeof decisionContextSchema>;
