/**
 * The demand-response event as the meter agent passes it to the policy (a subset of the wire
 * contract's event; extra keys such as `v` or `dsmId` are accepted and dropped).
 */
import { z } from 'zod';
import { MAX_ENERGY_WH, pricePerMWh } from './policy-schema.js';

/** An instant in UTC, ISO 8601 with `Z`, e.g. `2026-01-14T17:00:00Z`. */
export const instant = z.iso.datetime({
  offset: false,
  error: 'must be an instant in UTC, ISO 8601 with Z, e.g. 2026-01-14T17:00:00Z',
});

export const drEventSchema = z
  .object(
    {
      eventId: z
        .string({ error: 'must be an event id' })
        .min(1, { error: 'must be an event id' })
        .max(64, { error: 'must be an event id of at most 64 characters' }),
      windowStart: instant,
      windowEnd: instant,
      bidDeadline: instant,
      requestedReductionWh: z
        .int({ error: 'must be a positive integer' })
        .min(1, { error: 'must be a positive integer' })
        .max(MAX_ENERGY_WH * 1000, { error: 'must be a positive integer' }),
      priceCapPerMWh: pricePerMWh,
    },
    { error: 'must be a JSON object' },
  )
  .superRefine((e, ctx) => {
    if (Date.parse(e.windowEnd) <= Date.parse(e.windowStart))
      ctx.addIssue({
        code: 'custom',
        path: ['windowEnd'],
        input: e.windowEnd,
        message: 'must be after windowStart',
      });
  });

/** A demand-response event: window [windowStart, windowEnd), bids until bidDeadline. */
export type DrEvent = z.output<typeof drEventSchema>;
