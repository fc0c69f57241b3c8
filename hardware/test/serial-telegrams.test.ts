/** DSMR telegrams of every supported version, CRC failures, truncation, split reads and noise. */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  crc16,
  dsmrSnapshot,
  formatDsmrTelegram,
  parseDsmrTelegram,
  TelegramFramer,
} from '../src/serial/index.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'latin1');

/** A telegram with its CRC from data lines (built from the DSMR 5.0.2 P1 companion standard). */
const telegram = (lines: string[], header = '/TRE5\\2SPEC') => {
  const body = `${[header, '', ...lines, '!'].join('\r\n')}`;
  return `${body}${crc16(Buffer.from(body, 'latin1')).toString(16).toUpperCase().padStart(4, '0')}\r\n`;
};
const parsed = (text: string) => {
  const r = parseDsmrTelegram(text);
  if (!r.ok) throw new Error(`rejected: ${r.reason} ${r.detail}`);
  return r.telegram;
};

describe('DSMR telegrams', () => {
  it('CRC-16/ARC matches the catalogue check value (CRC of "123456789" = 0xBB3D)', () => {
    expect(crc16(Buffer.from('123456789'))).toBe(0xbb3d);
  });
  it('DSMR 5.0: the P1 companion standard example telegram (CRC line recomputed)', () => {
    const text = fixture('dsmr5-spec-example.txt');
    const r = parseDsmrTelegram(text);
    expect(r).toMatchObject({
      ok: true,
      telegram: {
        version: '50',
        timestamp: '2010-12-09T11:30:20+01:00',
        importWh: 246_913_578,
        exportWh: 246_913_578,
        importByTariffWh: { '1': 123_456_789, '2': 123_456_789 },
        powerImportW: 1_193,
        powerExportW: 0,
        tariff: '0002',
        crcChecked: true,
        mbus: [{ channel: 1, litres: 12_785_123, timestamp: '2010-12-09T11:25:00+01:00' }],
      },
    });
  });
  it('DSMR 5.0 example: per-phase values, failures and their log, sags and swells, the gas channel', () => {
    const t = parsed(fixture('dsmr5-spec-example.txt'));
    expect(t.phases).toEqual({
      L1: { voltageV: 220.1, currentA: 1, powerImportW: 1_111, powerExportW: 4_444 },
      L2: { voltageV: 220.2, currentA: 2, powerImportW: 2_222, powerExportW: 5_555 },
      L3: { voltageV: 220.3, currentA: 3, powerImportW: 3_333, powerExportW: 6_666 },
    });
    expect(t).toMatchObject({
      powerFailures: 4,
      longPowerFailures: 2,
      powerFailureLog: [
        { endedAt: '2010-12-08T15:24:15+01:00', durationS: 240 },
        { endedAt: '2010-12-08T15:10:04+01:00', durationS: 301 },
      ],
      voltageSags: { L1: 2, L2: 1, L3: 0 },
      voltageSwells: { L1: 0, L2: 3, L3: 0 },
      mbus: [{ channel: 1, deviceType: 3, kind: 'gas', litres: 12_785_123 }],
      skippedLines: [],
    });
    expect(dsmrSnapshot(t)).toMatchObject({
      protocol: 'dsmr',
      at: Date.UTC(2010, 11, 9, 10, 30, 20),
      importWh: 246_913_578,
      phases: { L2: { voltageV: 220.2 } },
      powerFailureLog: [
        { endedAt: Date.UTC(2010, 11, 8, 14, 24, 15), durationS: 240 },
        { endedAt: Date.UTC(2010, 11, 8, 14, 10, 4), durationS: 301 },
      ],
      mbus: [{ channel: 1, kind: 'gas', litres: 12_785_123, at: Date.UTC(2010, 11, 9, 10, 25) }],
    });
  });

  it('a malformed line is skipped and counted by its OBIS code; a malformed energy register rejects', () => {
    const lines = [
      '0-0:1.0.0(260105090000W)',
      '1-0:1.8.1(000100.000*kWh)',
      '1-0:1.8.2(000200.000*kWh)',
      '1-0:32.7.0(2x0.1*V)', // a digit garbled at the meter
      '1-0:52.7.0(230.1*A)', // the wrong unit
      '1-0:72.7.0(231.0*V',
      '1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)',
      '1-0:31.7.0(001*A)',
    ];
    const t = parsed(telegram(lines));
    expect(t.skippedLines).toEqual(['1-0:32.7.0', '1-0:52.7.0', '1-0:72.7.0', '1-0:99.97.0']);
    expect(t.phases).toEqual({ L1: { currentA: 1 } });
    expect(t.powerFailureLog).toBeUndefined();
    expect(t.importWh).toBe(300_000);
    expect(dsmrSnapshot(t).skippedLines).toEqual(t.skippedLines);
    for (const bad of [
      '1-0:1.8.1(0001x0.000*kWh)',
      '1-0:1.8.1(000100.000*kW)',
      '1-0:2.8.2(000100.000',
      '1-0:1.8.0()',
    ])
      expect(parseDsmrTelegram(telegram([...lines.slice(0, 3), bad]))).toEqual({
        ok: false,
        reason: 'MALFORMED_VALUE',
        detail: `malformed ${bad.slice(0, 9)}`, // the code, never the value
      });
  });

  it('totals only (Swedish, Luxembourg, Austrian P1): 1.8.0 and 2.8.0; with tariffs too, 1.8.0 is the total', () => {
    expect(
      parsed(telegram(['1-0:1.8.0(00006678.394*kWh)', '1-0:2.8.0(00000012.5*kWh)'], '/ELL5\\253833635_A')),
    ).toMatchObject({ importWh: 6_678_394, exportWh: 12_500, importByTariffWh: {}, exportByTariffWh: {} });
    expect(
      parsed(
        telegram(['1-0:1.8.0(000300.000*kWh)', '1-0:1.8.1(000100.000*kWh)', '1-0:1.8.2(000200.000*kWh)']),
      ),
    ).toMatchObject({ importWh: 300_000, exportWh: 0, importByTariffWh: { '1': 100_000, '2': 200_000 } });
  });

  it('M-Bus channels told apart by device type: gas, water, heat in GJ, Belgian 24.2.3; DSMR 3 gas on the next line', () => {
    const t = parsed(
      telegram([
        '1-0:1.8.1(000001.000*kWh)',
        '0-1:24.1.0(003)',
        '0-1:24.2.3(200512134558S)(00112.384*m3)',
        '0-2:24.1.0(007)',
        '0-2:24.2.1(200512134558S)(00872.234*m3)',
        '0-3:24.1.0(004)',
        '0-3:24.2.1(260215200523W)(240.860*GJ)',
        '0-4:24.1.0(010)',
        '0-4:24.2.1(260215200523W)(000012.345*kWh)',
      ]),
    );
    expect(t.mbus).toEqual([
      { channel: 1, deviceType: 3, kind: 'gas', litres: 112_384, timestamp: '2020-05-12T13:45:58+02:00' },
      { channel: 2, deviceType: 7, kind: 'water', litres: 872_234, timestamp: '2020-05-12T13:45:58+02:00' },
      { channel: 3, deviceType: 4, kind: 'heat', wh: 66_905_556, timestamp: '2026-02-15T20:05:23+01:00' },
      { channel: 4, deviceType: 10, kind: 'cold', wh: 12_345, timestamp: '2026-02-15T20:05:23+01:00' },
    ]);
    const dsmr3 = [
      '1-0:1.8.1(00001.001*kWh)',
      '0-1:96.1.0(3232323241424344313233343536373839)',
      '0-1:24.1.0(03)',
      '0-1:24.3.0(090212160000)(00)(60)(1)(0-1:24.2.1)(m3)',
      '(00123.456)',
    ].join('\r\n');
    expect(parsed(`/ISk5\\2MT382-1000\r\n\r\n${dsmr3}\r\n!\r\n`).mbus).toEqual([
      { channel: 1, deviceType: 3, kind: 'gas', litres: 123_456 },
    ]);
  });

  it('Belgian capacity tariff: current average, this month’s peak, monthly history with a placeholder time', () => {
    const t = parsed(
      telegram([
        '1-0:1.8.1(000001.000*kWh)',
        '1-0:1.4.0(02.351*kW)',
        '1-0:1.6.0(200509134558S)(02.589*kW)',
        '0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(200401000000S)(632525252525W)(00.000*kW)(200501000000S)(200423192538S)(03.695*kW)',
      ]),
    );
    expect(t.peaks).toEqual({
      currentAverageW: 2_351,
      monthMaxW: 2_589,
      monthMaxAt: '2020-05-09T13:45:58+02:00',
      history: [
        { monthStart: '2020-04-01T00:00:00+02:00', maxW: 0 },
        { monthStart: '2020-05-01T00:00:00+02:00', at: '2020-04-23T19:25:38+02:00', maxW: 3_695 },
      ],
    });
    expect(dsmrSnapshot(t).peaks).toEqual({
      currentAverageW: 2_351,
      monthMaxW: 2_589,
      monthMaxAt: Date.UTC(2020, 4, 9, 11, 45, 58),
      history: [
        { monthStart: Date.UTC(2020, 2, 31, 22), maxW: 0 },
        { monthStart: Date.UTC(2020, 3, 30, 22), at: Date.UTC(2020, 3, 23, 17, 25, 38), maxW: 3_695 },
      ],
    });
    // A history whose count does not match its entries is skipped, not guessed at.
    const broken = parsed(
      telegram(['1-0:1.8.1(000001.000*kWh)', '0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(200401000000S)']),
    );
    expect(broken.skippedLines).toEqual(['0-0:98.1.0']);
  });

  it('DSMR 4.2 (Kaifa)', () => {
    expect(parseDsmrTelegram(fixture('dsmr42-kaifa.txt'))).toMatchObject({
      ok: true,
      telegram: { version: '42', importWh: 3_016_829, crcChecked: true },
    });
  });
  it('DSMR 2.2: no CRC, gas value on the next line', () => {
    expect(parseDsmrTelegram(fixture('dsmr22.txt'))).toMatchObject({
      ok: true,
      telegram: {
        importWh: 269_000,
        exportWh: 32_000,
        powerImportW: 980,
        crcChecked: false,
        mbus: [{ channel: 1, litres: 124_477 }],
      },
    });
  });
  it('Belgian e-MUCS and field quirks: version line, *255 suffix, Wh units, a CRC without its leading zero', () => {
    const body =
      '/FLU5\\253769484_A\r\n\r\n0-0:96.1.4(50217)\r\n0-0:1.0.0(200512135409S)\r\n1-0:1.8.1*255(006545766*Wh)\r\n1-0:1.8.2(000123.4567*kWh)\r\n1-0:2.8.1(000000.000*kWh)\r\n1-0:1.7.0(00.339*KW)\r\n!';
    let text = '';
    for (let i = 0; i < 4096 && !text; i++) {
      const b = `${body.replace('!', `0-0:96.13.0(${i})\r\n!`)}`;
      const crc = crc16(Buffer.from(b, 'latin1'));
      if (crc < 0x1000) text = `${b}${crc.toString(16).toUpperCase()}\r\n`; // 3 hex digits
    }
    expect(parseDsmrTelegram(text)).toMatchObject({
      ok: true,
      telegram: {
        version: '50217',
        timestamp: '2020-05-12T13:54:09+02:00',
        importWh: 6_545_766 + 123_456,
        powerImportW: 339,
      },
    });
  });
  it('rejects CRC mismatches and truncated telegrams, never half-parses', () => {
    const good = fixture('dsmr5-spec-example.txt');
    expect(parseDsmrTelegram(good.replace('123456.789', '123456.780'))).toMatchObject({
      ok: false,
      reason: 'CRC_MISMATCH',
    });
    expect(parseDsmrTelegram(good.slice(0, 300))).toMatchObject({ ok: false, reason: 'TRUNCATED' });
    expect(parseDsmrTelegram('garbage')).toMatchObject({ ok: false, reason: 'NO_HEADER' });
  });
  it('formatDsmrTelegram round-trips (the simulator’s meters)', () => {
    const t = formatDsmrTelegram({
      timestamp: new Date(Date.UTC(2026, 6, 1, 10)),
      dst: true,
      importWh: [1_234_567, 89],
      powerW: 2_345,
    });
    expect(parseDsmrTelegram(t)).toMatchObject({
      ok: true,
      telegram: {
        importWh: 1_234_656,
        powerImportW: 2_345,
        timestamp: '2026-07-01T12:00:00+02:00',
        crcChecked: true,
      },
    });
  });
});

describe('telegram framing', () => {
  const telegrams = [fixture('dsmr5-spec-example.txt'), fixture('dsmr42-kaifa.txt'), fixture('dsmr22.txt')];
  it('finds exactly the telegrams in any chunking of a stream with noise between them (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(0, 1, 2), { minLength: 1, maxLength: 6 }),
        fc.array(
          fc.string({ unit: fc.constantFrom('x', ' ', '\r', '\n', '\x00', '\xff', 'A'), maxLength: 20 }),
          { minLength: 7, maxLength: 7 },
        ),
        fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 50 }),
        (order, noise, cuts) => {
          const stream = Buffer.from(
            order.map((i, k) => noise[k]! + telegrams[i]!).join('') + noise[6]!,
            'latin1',
          );
          const framer = new TelegramFramer();
          const found: string[] = [];
          let pos = 0;
          for (let k = 0; pos < stream.length; k++) {
            const n = cuts[k % cuts.length]!;
            found.push(...framer.push(stream.subarray(pos, pos + n)));
            pos += n;
          }
          expect(found).toEqual(order.map((i) => telegrams[i]));
          expect(found.every((t) => parseDsmrTelegram(t).ok)).toBe(true);
        },
      ),
    );
  });
  it('drops a telegram cut short by the next one', () => {
    const f = new TelegramFramer();
    const t = fixture('dsmr42-kaifa.txt');
    expect(f.push(Buffer.from(t.slice(0, 100) + t, 'latin1'))).toEqual([t]);
    expect(f.stats.truncated).toBe(1);
  });
});
