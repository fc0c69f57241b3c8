/** The billing period calendar, without SQLite or MQTT. */
import type { PeriodLength } from '@tre/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addPeriods,
  atLeast,
  type Calendar,
  changeCalendar,
  openPeriod,
  type Period,
  periodAt,
  periodsBetween,
} from '../src/billing/period-calendar.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const jan31 = Date.UTC(2026, 0, 31);
const day = { unit: 'day' as const, count: 1 };

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
    const cal: Calendar = [{ from: anchor, length: day }];
    expect(openPeriod(cal, HOUR, anchor + DAY + HOUR - 1)).toEqual({ start: anchor, end: anchor + DAY });
    expect(openPeriod(cal, HOUR, anchor + DAY + HOUR)).toEqual({
      start: anchor + DAY,
      end: anchor + 2 * DAY,
    });
  });

  it('lists the periods missed between the last stated one and the open one, across a change', () => {
    const t = Date.UTC(2026, 2, 1);
    const cal: Calendar = [
      { from: t, length: day },
      { from: t + 2 * DAY, length: { unit: 'day', count: 2 } },
    ];
    expect(periodsBetween(cal, t, t + 6 * DAY)).toEqual([
      { start: t + DAY, end: t + 2 * DAY },
      { start: t + 2 * DAY, end: t + 4 * DAY },
      { start: t + 4 * DAY, end: t + 6 * DAY },
    ]);
    expect(periodsBetween(cal, t, t + DAY)).toEqual([]);
  });

  it('re-anchoring: a legal-length period starting just under one period ago changes nothing before the next boundary', () => {
    const t = Date.UTC(2026, 2, 1);
    const now = t + 3 * DAY + 5 * HOUR;
    const change = changeCalendar(
      [{ from: t, length: day }],
      { startsAt: now - DAY + 60_000, length: day },
      day,
      now,
    );
    expect(change).toMatchObject({ ok: true, effectiveFrom: t + 4 * DAY });
    if (!change.ok) return;
    expect(change.calendar).toEqual([{ from: t, length: day }]); // same length from a boundary: no change at all
    expect(periodAt(change.calendar, now)).toEqual({ start: t + 3 * DAY, end: t + 4 * DAY });
  });

  it('a change of length takes effect at a boundary; a second change replaces a pending one', () => {
    const t = Date.UTC(2026, 2, 1);
    const week = { unit: 'day' as const, count: 7 };
    const first = changeCalendar([{ from: t, length: day }], { startsAt: t, length: week }, day, t + HOUR);
    expect(first).toMatchObject({ ok: true, effectiveFrom: t + DAY });
    if (!first.ok) return;
    const second = changeCalendar(
      first.calendar,
      { startsAt: t, length: { unit: 'month', count: 1 } },
      day,
      t + 2 * HOUR,
    );
    expect(second).toMatchObject({ ok: true, effectiveFrom: t + DAY });
    if (!second.ok) return;
    expect(second.calendar).toEqual([
      { from: t, length: day },
      { from: t + DAY, length: { unit: 'month', count: 1 } },
    ]);
    expect(changeCalendar(second.calendar, { startsAt: t, length: day }, week, t)).toMatchObject({
      ok: false,
      reason: 'PERIOD_TOO_SHORT',
    });
  });

  it('property: over random change sequences, statements tile time and none is below the minimum', () => {
    const length = fc.oneof(
      fc.record({ unit: fc.constant('day' as const), count: fc.integer({ min: 1, max: 40 }) }),
      fc.record({ unit: fc.constant('month' as const), count: fc.integer({ min: 1, max: 3 }) }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 10 }),
        length,
        fc.array(
          fc.record({
            afterMs: fc.integer({ min: 0, max: 20 * DAY }),
            startsAtOffset: fc.integer({ min: -60 * DAY, max: 60 * DAY }),
            length,
          }),
          { maxLength: 12 },
        ),
        (minDaysCount, firstLength, changes) => {
          const min: PeriodLength = { unit: 'day', count: minDaysCount };
          const t0 = Date.UTC(2026, 0, 1);
          const first = changeCalendar(undefined, { startsAt: t0, length: firstLength }, min, t0);
          if (!first.ok) return; // below the minimum: refused, no calendar
          let calendar = first.calendar;
          const grace = HOUR;
          let now = t0;
          const stated: Period[] = [];
          const stateUpTo = (until: number) => {
            // The TRE states each period once it is no longer open.
            for (;;) {
              const next = stated.length
                ? periodAt(calendar, stated[stated.length - 1]!.end)
                : periodAt(calendar, t0);
              if (next.end + grace > until) return;
              stated.push(next);
            }
          };
          for (const c of changes) {
            now += c.afterMs;
            stateUpTo(now);
            const open = openPeriod(calendar, grace, now);
            const r = changeCalendar(
              calendar,
              { startsAt: now + c.startsAtOffset, length: c.length },
              min,
              now,
            );
            if (!r.ok) {
              expect(atLeast(c.length, min)).toBe(false);
              continue;
            }
            expect(r.effectiveFrom).toBeGreaterThan(now);
            calendar = r.calendar;
            expect(openPeriod(calendar, grace, now)).toEqual(open); // the open period keeps its span
          }
          stateUpTo(now + 400 * DAY);
          for (const [i, p] of stated.entries()) {
            expect((p.end - p.start) / DAY).toBeGreaterThanOrEqual(minDaysCount);
            if (i > 0) expect(p.start).toBe(stated[i - 1]!.end); // no overlap, no gap
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
