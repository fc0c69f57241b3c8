/** The meter reader over @serialport/binding-mock fed real telegram bytes, and interval energy maths. */
import { readFileSync } from 'node:fs';
import { MockBinding } from '@serialport/binding-mock';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type DsmrTelegram,
  formatDsmrTelegram,
  IntervalAccumulator,
  MeterReader,
} from '../src/serial/index.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url));
const realTimers = {
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (h: unknown) => clearTimeout(h as NodeJS.Timeout),
};
afterEach(() => MockBinding.reset());

describe('meter reader (mock serial binding)', () => {
  it('delivers good telegrams from split reads with noise, counts rejected ones', async () => {
    MockBinding.createPort('/dev/ttyMOCK', { echo: false, record: false });
    const reader = new MeterReader({
      path: '/dev/ttyMOCK',
      binding: MockBinding as never,
      clock: realTimers,
    });
    const got: DsmrTelegram[] = [];
    reader.on('telegram', (t) => got.push(t));
    const opened = new Promise((r) => reader.once('state', r));
    reader.start();
    await opened;
    const good = fixture('dsmr42-kaifa.txt');
    const bad = Buffer.from(good.toString('latin1').replace('001581.123', '001581.124'), 'latin1');
    const stream = Buffer.concat([
      Buffer.from('\x00\xffnoise'),
      good,
      Buffer.from('zz'),
      bad,
      fixture('dsmr5-spec-example.txt'),
    ]);
    const port = (reader.stream as unknown as { port: { emitData(b: Buffer): void } }).port;
    for (let i = 0; i < stream.length; i += 37) port.emitData(stream.subarray(i, i + 37));
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map((t) => t.importWh)).toEqual([3_016_829, 246_913_578]);
    expect(reader.counts.rejected).toEqual({ CRC_MISMATCH: 1 });
    await reader.stop();
  });
});

describe('interval energy', () => {
  const reading = (at: number, importWh: number) => ({ at, importWh, exportWh: 0 });

  it('keys intervals by UTC start across the autumn DST change (Europe/Amsterdam, 25-hour day)', () => {
    // 2026-10-25 01:00 UTC = 03:00 CEST -> 02:00 CET: local 02:00-03:00 happens twice.
    const acc = new IntervalAccumulator(15);
    const start = Date.UTC(2026, 9, 25, 0, 0);
    const out = [];
    let reg = 1_000_000;
    for (let t = start; t <= start + 3 * 3_600_000; t += 60_000) {
      out.push(...acc.push(reading(t + 1_000, reg)));
      reg += 10;
    }
    // 3 hours of UTC time: the first interval has no register at its start (the first reading is
    // after it), then 11 distinct intervals, although local time repeats an hour.
    expect(out).toHaveLength(11);
    expect(new Set(out.map((o) => o.intervalStart)).size).toBe(11);
    expect(out.every((o) => o.importWh === 150)).toBe(true);
    const spring = new IntervalAccumulator(30);
    const s0 = Date.UTC(2026, 2, 29, 0, 30); // 01:30 CET; at 01:00 UTC clocks jump 02:00 -> 03:00
    const so = [];
    for (let t = s0; t <= s0 + 2 * 3_600_000; t += 60_000)
      so.push(...spring.push(reading(t + 500, (t - s0) / 60_000)));
    expect(so.map((o) => o.importWh)).toEqual([30, 30, 30]); // 01:00, 01:30, 02:00 UTC: no hour lost
  });

  it('fills a 2-hour gap from the register at the next boundary and flags it', () => {
    const acc = new IntervalAccumulator(15);
    const t0 = Date.UTC(2026, 0, 5, 8, 0);
    const out = [];
    for (let m = 0; m <= 30; m++) out.push(...acc.push(reading(t0 + m * 60_000 + 1_000, 1_000 + m * 10)));
    // unplugged 08:31 -> 10:31; 1,200 Wh used meanwhile
    for (let m = 151; m <= 181; m++)
      out.push(...acc.push(reading(t0 + m * 60_000 + 1_000, 1_000 + 300 + 1_200 + (m - 151) * 10)));
    const starts = out.map((o) => o.intervalStart.slice(11, 16));
    expect(starts).toEqual(['08:15', '08:30', '10:30', '10:45']);
    const closing = out.find((o) => o.intervalStart.endsWith('10:30:00.000Z'))!;
    expect(closing.gap).toEqual({ from: '2026-01-05T08:45:00.000Z', intervals: 8 });
    // The gap's 1,200 Wh land in the interval that closes it (plus that interval's own 13 minutes of 10 Wh).
    expect(closing.importWh).toBe(1_200 + 130);
    expect(out.reduce((a, o) => a + o.importWh, 0)).toBe(
      out[out.length - 1]!.importRegisterWh - out[0]!.importRegisterWh + out[0]!.importWh,
    );
  });

  it('a reading exactly on a boundary is that boundary’s register (first reading included)', () => {
    const acc = new IntervalAccumulator(15);
    const t0 = Date.UTC(2026, 0, 5, 8, 0);
    const out = [];
    // Every 5 minutes on the dot, 40 Wh apart; unplugged 09:05 -> 10:00 (the 09:xx readings missing).
    for (let m = 0; m <= 65; m += 5) out.push(...acc.push(reading(t0 + m * 60_000, 1_000 + m * 8)));
    for (let m = 120; m <= 150; m += 5) out.push(...acc.push(reading(t0 + m * 60_000, 1_000 + m * 8)));
    expect(out.map((o) => [o.intervalStart.slice(11, 16), o.importWh, o.gap?.intervals])).toEqual([
      ['08:00', 120, undefined],
      ['08:15', 120, undefined],
      ['08:30', 120, undefined],
      ['08:45', 120, undefined],
      // Its end register is the last reading at or before 09:15, the one at 09:05.
      ['09:00', 40, undefined],
      // 09:15-10:00 missing: the energy from that reading (09:05) to 10:15 closes the gap.
      ['10:00', 8 * 70, 4],
      ['10:15', 120, undefined],
    ]);
    // Nothing lost: the intervals add up to the register difference.
    expect(out.reduce((a, o) => a + o.importWh, 0)).toBe(out.at(-1)!.importRegisterWh - 1_000);
  });

  it('works with the simulator’s telegrams', () => {
    const t = formatDsmrTelegram({ timestamp: new Date(), dst: false, importWh: [1, 2] });
    expect(t.startsWith('/TRE5')).toBe(true);
  });
});
