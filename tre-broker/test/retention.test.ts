/**
 * Retention (retention/retention-rule.ts, retention-service.ts): the horizon as pure arithmetic;
 * then through the TRE's real flows on a manual clock and a real SQLite file: a reading that is
 * billed, released and older than the baseline window is deleted (with its alerts), one still
 * inside the baseline window or not yet billed stays, a statement is still re-sent after the
 * readings it billed are gone, and a settled DR event loses its pseudonym map while an unsettled
 * one keeps it. Never time-based: waits are for conditions, on the TRE's manual clock.
 */
import { Writable } from 'node:stream';
import {
  type Acceptance,
  type PseudoBids,
  type Statement,
  signContent,
  type Tariff,
  topics,
} from '@tre/protocol';
import { createLogger, wireFlows } from '@tre/tre-broker';
import { decodeJwt } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { GroupBook } from '../src/monitoring/group-book.js';
import {
  baselineFrom,
  billedBefore,
  pseudonymsMayGo,
  releasedBefore,
  retentionHorizon,
} from '../src/retention/retention-rule.js';
import { Store } from '../src/store/store.js';
import { flowContext } from './support/flow-context.js';

const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

/** Yields to the event loop until `cond` holds (the TRE's async work: commits, signatures). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setImmediate(r));
}

describe('retention rule (pure)', () => {
  const T = Date.UTC(2026, 2, 1);

  it('billed: up to the end of the last stated period; nothing without a statement or calendar', () => {
    const daily = [{ from: T, length: { unit: 'day' as const, count: 1 } }];
    expect(billedBefore(undefined, T)).toBeUndefined();
    expect(billedBefore(daily, undefined)).toBeUndefined();
    expect(billedBefore(daily, T + 2 * DAY)).toBe(T + 3 * DAY);
    const monthly = [{ from: T, length: { unit: 'month' as const, count: 1 } }];
    expect(billedBefore(monthly, T)).toBe(Date.UTC(2026, 3, 1));
    // A calendar change from a boundary on: the stated period is measured in its own segment.
    const changed = [...monthly, { from: Date.UTC(2026, 3, 1), length: { unit: 'day' as const, count: 7 } }];
    expect(billedBefore(changed, T)).toBe(Date.UTC(2026, 3, 1));
    expect(billedBefore(changed, Date.UTC(2026, 3, 8))).toBe(Date.UTC(2026, 3, 15));
  });

  it('released: an interval is past once its release time (end + delay) has come; never past the slowest group', () => {
    const R = 30 * MIN;
    const D = 5 * MIN;
    const s = T + 10 * R; // an interval, released at s + 35 min
    expect(releasedBefore(s + R + D - 1, R, D, undefined)).toBe(s);
    expect(releasedBefore(s + R + D, R, D, undefined)).toBe(s + R);
    // Every group released s: the same; one group's release of s failed (its last is s - R): s stays.
    expect(releasedBefore(s + R + D, R, D, s)).toBe(s + R);
    expect(releasedBefore(s + R + D, R, D, s - R)).toBe(s);
  });

  it('baseline: 30 days before now, or before the window of an accepted event not yet settled', () => {
    const now = T + 40 * DAY;
    expect(baselineFrom(now, 30, undefined)).toBe(now - 30 * DAY);
    expect(baselineFrom(now, 30, now - 2 * DAY)).toBe(now - 32 * DAY);
    expect(baselineFrom(now, 30, now + 2 * DAY)).toBe(now - 30 * DAY); // a future window: now binds
  });

  it('the horizon is the earliest of billed, released and the baseline window; undefined when nothing is billed', () => {
    const now = T + 60 * DAY + 7 * MIN;
    const facts = {
      now,
      billedBefore: T + 59 * DAY,
      releaseMs: 30 * MIN,
      releaseDelayMs: 5 * MIN,
      slowestRelease: undefined,
      baselineLookbackDays: 30,
      earliestUnsettledWindow: undefined,
    };
    expect(retentionHorizon(facts)).toBe(now - 30 * DAY); // the baseline window binds
    expect(retentionHorizon({ ...facts, billedBefore: T + 10 * DAY })).toBe(T + 10 * DAY);
    expect(retentionHorizon({ ...facts, billedBefore: undefined })).toBeUndefined();
    expect(retentionHorizon({ ...facts, earliestUnsettledWindow: T + 25 * DAY })).toBe(T - 5 * DAY);
    expect(retentionHorizon({ ...facts, slowestRelease: T + 5 * DAY })).toBe(T + 5 * DAY + 30 * MIN);
    expect(retentionHorizon({ ...facts, baselineLookbackDays: 0 })).toBe(T + 59 * DAY);
    expect(retentionHorizon({ ...facts, baselineLookbackDays: 0, billedBefore: now + DAY })).toBe(
      T + 60 * DAY,
    ); // release: the interval that ended at 60 d 00:00 was released at 00:05
  });

  it('a pseudonym map may go only once its event is settled', () => {
    expect(pseudonymsMayGo('settled')).toBe(true);
    expect(pseudonymsMayGo('cancelled')).toBe(true);
    for (const stage of ['open', 'released', 'accepted'] as const) expect(pseudonymsMayGo(stage)).toBe(false);
  });

  it("the group book's slowest release: the least-released group's newest interval", () => {
    const store = new Store(':memory:');
    try {
      const groups = GroupBook.open(store);
      expect(groups.slowestRelease()).toBeUndefined();
      groups.define(
        'd',
        [
          { groupId: 'g1', meters: ['a'] },
          { groupId: 'g2', meters: ['b'] },
        ],
        T,
      );
      expect(groups.slowestRelease()).toBeUndefined();
      const [g1, g2] = groups.groups('d');
      groups.recordRelease(g1!, T, 'released');
      groups.recordRelease(g1!, T + 30 * MIN, 'released');
      expect(groups.slowestRelease()).toBe(T + 30 * MIN); // g2 has no release yet
      groups.recordRelease(g2!, T, 'released');
      expect(groups.slowestRelease()).toBe(T);
    } finally {
      store.close();
    }
  });
});

let f: ReturnType<typeof flowContext> | undefined;
afterEach(() => {
  f?.close();
  f = undefined;
});

describe('retention in the flows', () => {
  it('deletes billed, released readings older than the baseline window (and their alerts); keeps the rest; statements still re-send', {
    timeout: 20_000,
  }, async () => {
    const T0 = Date.UTC(2026, 4, 4);
    f = flowContext(T0 - HOUR, { durable: true });
    const ctx = f;
    const logged: string[] = [];
    const log = createLogger({
      level: 'debug',
      destination: new Writable({
        write(chunk, _enc, done) {
          logged.push(chunk.toString());
          done();
        },
      }),
    });
    const flows = wireFlows({ ...ctx.ctx, log }, { billing: { minPeriod: { unit: 'day', count: 1 } } });
    flows.start();
    try {
      await ctx.ctx.registry.upsert([
        { meterId: 'h1', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'acct-1' },
        { meterId: 'h2', supplierId: 's2', dnoId: 'd1', capacityW: 10_000, account: 'acct-2' },
        { meterId: 'h3', supplierId: 's3', dnoId: 'd1', capacityW: 10_000, account: 'acct-3' },
      ]);
      // s1 bills daily from T0 at a flat price; s2 never sets a calendar; s3 bills every 32 days, so
      // its first period is still open at the end (nothing of s2's or s3's is billed).
      const supplier = ctx.party({ role: 'supplier', id: 's1' });
      expect(
        await supplier.send(topics.billingPeriod('s1'), {
          v: 1,
          requestId: 'bp',
          startsAt: new Date(T0).toISOString(),
          length: { unit: 'day', count: 1 },
        }),
      ).toMatchObject({ status: 'accepted' });
      expect(
        await ctx.party({ role: 'supplier', id: 's3' }).send(topics.billingPeriod('s3'), {
          v: 1,
          requestId: 'bp3',
          startsAt: new Date(T0).toISOString(),
          length: { unit: 'day', count: 32 },
        }),
      ).toMatchObject({ status: 'accepted' });
      const tariff: Tariff = {
        v: 1,
        supplierId: 's1',
        tariffId: 't1',
        currency: 'GBP',
        validFrom: new Date(T0).toISOString(),
        validTo: new Date(T0 + DAY).toISOString(),
        intervalMinutes: 30,
        pricesPerMWh: Array(48).fill(200_000),
      };
      expect(
        await supplier.send(topics.tariff('s1'), {
          v: 1,
          requestId: 'tariff',
          jws: await signContent('tariff', tariff, supplier.privateKey),
        }),
      ).toMatchObject({ status: 'accepted' });

      const reading = (meter: string, start: number, energyWh: number, registerWh: number) =>
        ctx.party({ role: 'meter', id: meter }).send(topics.reading(meter), {
          v: 1,
          requestId: `${meter}-${start}`,
          intervalStart: new Date(start).toISOString(),
          intervalMinutes: 15,
          energyWh,
          registerWh,
        });
      ctx.clock.advance(2 * HOUR); // T0 + 1 h: day 0's first intervals have ended
      expect(await reading('h1', T0, 100, 1_100)).toMatchObject({ status: 'accepted' });
      expect(await reading('h1', T0 + 15 * MIN, 120, 1_220)).toMatchObject({ status: 'accepted' });
      // Out of bounds (10 kW for 15 min is 2,500 Wh): stored excluded, and alerted.
      expect(await reading('h1', T0 + 30 * MIN, 99_999, 101_219)).toMatchObject({ reason: 'OUT_OF_BOUNDS' });
      expect(await reading('h2', T0, 50, 500)).toMatchObject({ status: 'accepted' });
      expect(await reading('h3', T0, 70, 700)).toMatchObject({ status: 'accepted' });

      const db = ctx.ctx.store.db;
      const readingsOf = (meter: string, from: number, to: number) =>
        (
          db
            .prepare(
              'SELECT count(*) AS n FROM readings WHERE meter_id = ? AND interval_start >= ? AND interval_start < ?',
            )
            .get(meter, from, to) as { n: number }
        ).n;
      const alertsOf = (meter: string) =>
        (db.prepare('SELECT count(*) AS n FROM alerts WHERE meter_id = ?').get(meter) as { n: number }).n;
      expect([readingsOf('h1', T0, T0 + DAY), readingsOf('h2', T0, T0 + DAY), alertsOf('h1')]).toEqual([
        3, 1, 1,
      ]);

      /** The supplier's statement messages of the period starting at `start` (each JWS decoded once). */
      const periodOf = new Map<string, string>();
      const statedFrom = (start: number) =>
        ctx.published
          .filter((p) => p.topic === topics.statement('s1'))
          .map((p) => ({ jws: JSON.parse(p.payload).jws as string, at: p.at }))
          .filter((s) => {
            if (!periodOf.has(s.jws))
              periodOf.set(s.jws, (decodeJwt(s.jws) as unknown as Statement).periodStart);
            return periodOf.get(s.jws) === new Date(start).toISOString();
          });
      /** Moves the TRE clock day by day to `t`, each step's statements issued before the next. */
      const runTo = async (t: number) => {
        while (ctx.clock.now() < t) {
          const step = Math.min(DAY, t - ctx.clock.now());
          ctx.clock.advance(step);
          const last = billedDays(ctx.clock.now()).at(-1);
          if (last !== undefined) await until(() => statedFrom(T0 + last * DAY).length > 0);
        }
      };
      /** The days whose period has closed (end + the grace hour) by `now`. */
      const billedDays = (now: number) =>
        Array.from({ length: Math.max(0, Math.floor((now - HOUR - T0) / DAY)) }, (_, d) => d);

      // Day 20: day 0 is billed (stated) and released, but a baseline may still read it.
      await runTo(T0 + 20 * DAY + HOUR);
      expect(await reading('h1', T0 + 20 * DAY, 90, 1_310)).toMatchObject({ status: 'accepted' });
      await flows.retention.run();
      expect(statedFrom(T0)).not.toHaveLength(0);
      expect([readingsOf('h1', T0, T0 + DAY), alertsOf('h1')]).toEqual([3, 1]);

      // Day 31: day 0 is older than the 30-day baseline window too: gone, with its alert.
      await runTo(T0 + 31 * DAY + 2 * HOUR);
      await flows.retention.run();
      expect(readingsOf('h1', T0, T0 + DAY)).toBe(0);
      expect(alertsOf('h1')).toBe(0);
      expect(readingsOf('h1', T0 + 20 * DAY, T0 + 21 * DAY)).toBe(1); // within the baseline window
      expect(readingsOf('h2', T0, T0 + DAY)).toBe(1); // s2 has no calendar: not billed
      expect(readingsOf('h3', T0, T0 + DAY)).toBe(1); // s3's period is still open: not billed
      expect(alertsOf('h2')).toBe(0);
      expect(flows.retention.stats).toMatchObject({ readings: 3, alerts: 1 }); // over the timer's runs and these

      // The day-0 statement (never acknowledged) is still re-sent, unchanged, from its stored signature.
      const day0 = statedFrom(T0);
      const first = day0[0]!;
      expect(decodeJwt(first.jws)).toMatchObject({ periodStart: new Date(T0).toISOString(), totalMinor: 44 });
      const before = day0.length;
      ctx.clock.advance(10 * MIN);
      await until(() => statedFrom(T0).length > before);
      expect(statedFrom(T0).at(-1)).toEqual({ jws: first.jws, at: ctx.clock.now() });

      // Counts at debug, never an id.
      const lines = logged.map((l) => JSON.parse(l) as Record<string, unknown>);
      const retentionLines = lines.filter((l) => l.module === 'retention');
      const runs = retentionLines.filter((l) => l.msg === 'retention run');
      expect(runs.reduce((n, l) => n + (l.readings as number), 0)).toBe(3);
      for (const l of retentionLines) {
        expect(l.level).toBe(20);
        expect(JSON.stringify(l)).not.toMatch(/h[123]|acct|s[123]/);
      }
    } finally {
      await flows.stop();
    }
  });

  it("deletes a settled event's pseudonym map (bids) and keeps an unsettled one's; the event row still answers resends", async () => {
    const T0 = Date.UTC(2026, 6, 1, 8);
    f = flowContext(T0);
    const ctx = f;
    const flows = ctx.flows();
    try {
      await ctx.ctx.registry.upsert(
        ['a', 'b'].map((m) => ({
          meterId: m,
          supplierId: 's',
          dnoId: 'd',
          capacityW: 8_000,
          account: `acct-${m}`,
        })),
      );
      const dsm = ctx.party({ role: 'dsm', id: 'x' });
      const windows = { e1: T0 + 2 * HOUR, e2: T0 + 2 * DAY }; // e1 settles at +4 h, e2 at +2 d 2 h
      for (const [eventId, windowStart] of Object.entries(windows)) {
        const event = {
          v: 1,
          eventId,
          dsmId: 'x',
          windowStart: new Date(windowStart).toISOString(),
          windowEnd: new Date(windowStart + HOUR).toISOString(),
          bidDeadline: new Date(T0 + MIN).toISOString(),
          acceptBy: new Date(T0 + 30 * MIN).toISOString(),
          requestedReductionWh: 300,
          priceCapPerMWh: 1_000,
        };
        expect(
          await dsm.send(topics.drEvent('x'), {
            v: 1,
            requestId: `ev-${eventId}`,
            jws: await signContent('drEvent', event, dsm.privateKey),
          }),
        ).toMatchObject({ status: 'accepted' });
        for (const m of ['a', 'b'])
          expect(
            await ctx.party({ role: 'meter', id: m }).send(topics.bid(m), {
              v: 1,
              requestId: `bid-${eventId}-${m}`,
              bidId: `bid-${eventId}-${m}-xxxx`,
              eventId,
              quantityWh: 100,
              pricePerMWh: 500,
            }),
          ).toMatchObject({ status: 'accepted' });
      }
      ctx.clock.advance(MIN); // the deadline: both events release their bids
      const published = (topic: string) => ctx.published.filter((p) => p.topic === topic);
      await until(
        () =>
          published(topics.pseudoBids('x', 'e1')).length + published(topics.pseudoBids('x', 'e2')).length ===
          2,
      );
      const acceptances: Record<string, unknown> = {};
      for (const eventId of ['e1', 'e2']) {
        const bids = JSON.parse(published(topics.pseudoBids('x', eventId))[0]!.payload) as PseudoBids;
        const acceptance: Acceptance = {
          v: 1,
          eventId,
          dsmId: 'x',
          accepted: bids.bids.map((b) => b.pseudonym),
        };
        acceptances[eventId] = {
          v: 1,
          requestId: `acc-${eventId}`,
          jws: await signContent('drAcceptance', acceptance, dsm.privateKey),
        };
        expect(await dsm.send(topics.accept('x', eventId), acceptances[eventId])).toMatchObject({
          status: 'accepted',
          message: 'acceptance recorded',
        });
      }

      const db = ctx.ctx.store.db;
      const bidsOf = (eventId: string) =>
        (db.prepare('SELECT count(*) AS n FROM dr_bids WHERE event_id = ?').get(eventId) as { n: number }).n;
      const ledgerOf = (eventId: string) =>
        (db.prepare('SELECT count(*) AS n FROM ledger WHERE ref = ?').get(eventId) as { n: number }).n;
      expect([bidsOf('e1'), bidsOf('e2')]).toEqual([2, 2]);

      // e1 settles at +4 h (window end + the grace hour); the hourly run after that forgets its map.
      ctx.clock.advance(4 * HOUR - MIN);
      await until(() => published(topics.compliance('x', 'e1')).length === 1);
      ctx.clock.advance(HOUR);
      await until(() => bidsOf('e1') === 0);
      await flows.retention.run(); // after any run in flight, and once more
      expect(bidsOf('e2')).toBe(2); // accepted, not settled: settlement still needs its map
      expect(ledgerOf('e1')).toBe(4); // the credits and their reversals (no baseline: nothing shown) stay
      // The event row stays: an identical acceptance is a duplicate; a resent bid is not stored again.
      expect(await dsm.send(topics.accept('x', 'e1'), acceptances.e1)).toMatchObject({
        status: 'accepted',
        duplicate: true,
      });
      expect(
        await ctx.party({ role: 'meter', id: 'a' }).send(topics.bid('a'), {
          v: 1,
          requestId: 'bid-e1-a-again',
          bidId: 'bid-e1-a-xxxx',
          eventId: 'e1',
          quantityWh: 100,
          pricePerMWh: 500,
        }),
      ).toMatchObject({ status: 'refused', reason: 'BID_DEADLINE_PASSED' });
      expect(bidsOf('e1')).toBe(0);

      // e2 settles in its turn, and its map goes at the next run.
      ctx.clock.advance(T0 + 2 * DAY + 2 * HOUR - ctx.clock.now());
      await until(() => published(topics.compliance('x', 'e2')).length === 1);
      ctx.clock.advance(HOUR);
      await until(() => bidsOf('e2') === 0);
      expect(flows.retention.stats.bids).toBe(4);
    } finally {
      await flows.stop();
    }
  });
});
