/** DSMR telegrams of every supported version, CRC failures, truncation, split reads and noise. */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc16, formatDsmrTelegram, parseDsmrTelegram, TelegramFramer } from '../src/serial/index.js';

const fixture = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'latin1');

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
