/** The simulated DSM's demand-response schedule: an evening event every day. */
import type { DrEvent } from '@tre/protocol';

/**
 * At 14:00 UTC, when the feeders are loaded: an event for 18:00-19:00 asking 150 Wh per household,
 * bids until 17:00, the DSM's acceptance until 17:30. Any other time: none.
 */
export function eveningEvent(t: number, households: number): Omit<DrEvent, 'v' | 'dsmId'> | undefined {
  if (new Date(t).getUTCHours() !== 14 || new Date(t).getUTCMinutes() !== 0) return undefined;
  const day = t - 14 * 3_600_000;
  return {
    eventId: `evening-${new Date(day).toISOString().slice(0, 10)}`,
    windowStart: new Date(day + 18 * 3_600_000).toISOString(),
    windowEnd: new Date(day + 19 * 3_600_000).toISOString(),
    bidDeadline: new Date(day + 17 * 3_600_000).toISOString(),
    acceptBy: new Date(day + 17.5 * 3_600_000).toISOString(),
    requestedReductionWh: 150 * households,
    priceCapPerMWh: 400_000,
  };
}
