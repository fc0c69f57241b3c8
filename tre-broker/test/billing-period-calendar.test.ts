/** The billing period calendar, without SQLite or MQTT. */
import { describe, expect, it } from 'vitest';
import {
  addPeriods,
  atLeast,
  currentPeriod,
  expectedIntervals,
  periodsBetween,
} from '../src/billing/period-calendar.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const jan31 = Date.UTC(2026, 0, 31);

describe('period calendar', () => {
  it('adds days and calendar months in UTC', () => {
    expect(addPeriods(jan31, { unit: 'day', count: 2 }, 3)).toBe(jan31 + 6 * DAY);
    expect(new Date(addPeriods(Date.UTC(2026, 0, 15), { unit: 'month', count: 1 }, 1)).toISOString()).toBe(
      '2026-02-15T00:00:00.000Z',
    );
    expect(new Date(addPeriods(Date.UTC(2026, 10, 1), { unit: 'month', count: 1 }, 2)).toISOString()).toBe(
      '2027-01-01T00:00:00.000Z',
    );
  });

  it('never shorter than the minimum, across units', () => {
    expect(atLeast({ unit: 'month', count: 1 }, { unit: 'month', count: 1 })).toBe(true);
    expect(atLeast({ unit: 'day', count: 30 }, { unit: 'month', count: 1 })).toBe(false);
    expect(atLeast({ unit: 'day', count: 31 }, { unit: 'month', count: 1 })).toBe(true);
    expect(atLeast({ unit: 'month', count: 1 }, { unit: 'day', count: 28 })).toBe(true);
    expect(atLeast({ unit: 'month', count: 1 }, { unit: 'day', count: 29 })).toBe(false);
  });

  it('the open period stays open for the grace after its end', () => {
    const anchor = Date.UTC(2026, 2, 1);
    const day = { unit: 'day' as const, count: 1 };
    expect(currentPeriod(anchor, day, HOUR, anchor + DAY + HOUR - 1)).toEqual({
      start: anchor,
      end: anchor + DAY,
    });
    expect(currentPeriod(anchor, day, HOUR, anchor + DAY + HOUR)).toEqual({
      start: anchor + DAY,
      end: anchor + 2 * DAY,
    });
  });

  it('lists the periods missed between the last stated one and the open one', () => {
    const day = { unit: 'day' as const, count: 1 };
    const t = Date.UTC(2026, 2, 1);
    expect(periodsBetween(t, day, t + 3 * DAY)).toEqual([
      { start: t + DAY, end: t + 2 * DAY },
      { start: t + 2 * DAY, end: t + 3 * DAY },
    ]);
    expect(periodsBetween(t, day, t + DAY)).toEqual([]);
    expect(expectedIntervals(t, t + DAY)).toBe(96);
  });
});
