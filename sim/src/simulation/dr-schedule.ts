/**
 * The simulated DSM's demand-response schedule: an evening event every day, and (in the demo) a
 * first event soon after the start, so the first simulated hours already show a whole round.
 */
import type { DrEvent } from '@tre/protocol';

type Event = Omit<DrEvent, 'v' | 'dsmId'>;

const HOUR = 3_600_000;

/**
 * At 14:00 UTC, when the feeders are loaded: an event for 18:00-19:00 asking 150 Wh per household,
 * bids until 17:00, the DSM's acceptance until 17:30. Any other time: none.
 */
export function eveningEvent(t: number, households: number): Event | undefined {
  if (new Date(t).getUTCHours() !== 14 || new Date(t).getUTCMinutes() !== 0) return undefined;
  const day = t - 14 * HOUR;
  return {
    eventId: `evening-${new Date(day).toISOString().slice(0, 10)}`,
    windowStart: new Date(day + 18 * HOUR).toISOString(),
    windowEnd: new Date(day + 19 * HOUR).toISOString(),
    bidDeadline: new Date(day + 17 * HOUR).toISOString(),
    acceptBy: new Date(day + 17.5 * HOUR).toISOString(),
    requestedReductionWh: 150 * households,
    priceCapPerMWh: 400_000,
  };
}

/**
 * Raised at `t`, the run's first interval boundary: an event for [t + 3 h, t + 4 h) asking 150 Wh
 * per household, bids until t + 2 h, acceptance until t + 2.5 h. The three hours before the window give the TRE readings for a baseline; it ends before
 * the day's evening window (18:00) whenever the run starts by 14:00, and the evening event is not
 * raised that day when it starts later.
 */
export function firstEvent(t: number, households: number): Event {
  return {
    eventId: `first-${new Date(t).toISOString().slice(0, 16).replace('T', '-').replace(':', '')}`,
    windowStart: new Date(t + 3 * HOUR).toISOString(),
    windowEnd: new Date(t + 4 * HOUR).toISOString(),
    bidDeadline: new Date(t + 2 * HOUR).toISOString(),
    acceptBy: new Date(t + 2.5 * HOUR).toISOString(),
    requestedReductionWh: 150 * households,
    priceCapPerMWh: 400_000,
  };
}

/**
 * The events the DSM raises at interval boundary `t` of a run whose first boundary is `first`:
 * the evening event, and with `early` the first event at `first`.
 */
export function drEventsAt(t: number, first: number, households: number, early: boolean): Event[] {
  const events = early && t === first ? [firstEvent(t, households)] : [];
  const evening = eveningEvent(t, households);
  return evening ? [...events, evening] : events;
}
