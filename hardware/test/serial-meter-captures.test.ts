/**
 * Real meter captures (../shared/meter-captures, read there at test time, never copied here):
 * every DSMR telegram and SML file compared field by field with expected.json and
 * expected_extra.json, then the same bytes through the real serial stack (the serialport stream over
 * @serialport/binding-mock). Without the captures (as their README asks) these tests are skipped,
 * with a warning that says where they belong.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MockBinding } from '@serialport/binding-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { dsmrTimestamp } from '../src/serial/dsmr-telegram.js';
import {
  crc16X25,
  type DsmrTelegram,
  dsmrSnapshot,
  MeterReader,
  type Phase,
  parseDsmrTelegram,
  parseSmlFile,
  SmlReader,
  type SmlReadout,
  smlSnapshot,
  TelegramFramer,
} from '../src/serial/index.js';

const CAPTURES = fileURLToPath(new URL('../../../shared/meter-captures/', import.meta.url));
const present = existsSync(`${CAPTURES}dsmr/expected.json`) && existsSync(`${CAPTURES}sml/expected.json`);
const read = (path: string) => readFileSync(`${CAPTURES}${path}`);
const json = (path: string) => (present ? JSON.parse(read(path).toString('utf8')) : {});
const timers = {
  now: () => 5_000,
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (h: unknown) => clearTimeout(h as NodeJS.Timeout),
};
afterEach(() => MockBinding.reset());

// As the captures' README asks: without them, their tests are skipped, saying so.
if (!present)
  console.warn(
    `real meter captures not found (${CAPTURES}{dsmr,sml}/expected.json, the shared/ folder beside the checkout): their tests are skipped`,
  );

/** A capture file as the serial port delivers it: framed from the bytes, then parsed. */
function dsmrCapture(name: string): DsmrTelegram {
  const frames = new TelegramFramer().push(read(`dsmr/${name}`));
  expect(frames).toHaveLength(1);
  const r = parseDsmrTelegram(frames[0]!);
  if (!r.ok) throw new Error(`${name} rejected: ${r.reason} ${r.detail}`);
  return r.telegram;
}

describe.runIf(present)('DSMR captures', () => {
  const expected: Record<string, { import: number[]; export: number[] }> = json('dsmr/expected.json');
  it.each(Object.entries(expected))('%s: import and export per tariff (expected.json)', (name, e) => {
    const t = dsmrCapture(name);
    expect(t.crcChecked).toBe(!name.startsWith('telegram_v2') && !name.startsWith('telegram_v3'));
    expect([t.importByTariffWh['1'], t.importByTariffWh['2']]).toEqual(e.import);
    expect([t.exportByTariffWh['1'], t.exportByTariffWh['2']]).toEqual(e.export);
    expect(t.skippedLines).toEqual([]);
  });

  interface Extra {
    import_wh: number[];
    export_wh: number[];
    registers: { import_wh: string[]; export_wh: string[] };
    voltage_v?: Record<string, number>;
    current_a?: Record<string, number>;
    power_w?: Record<string, number>;
    power_failures?: number;
    long_power_failures?: number;
    power_failure_log?: { end: string; duration_s: number }[];
    voltage_sags?: Record<string, number>;
    voltage_swells?: Record<string, number>;
    mbus?: {
      channel: number;
      device_type: number;
      kind: string;
      value: number;
      unit: string;
      timestamp: string;
    }[];
    tariff?: number;
  }
  const extra = Object.entries(json('dsmr/expected_extra.json') as Record<string, Extra>).filter(
    ([name]) => !name.startsWith('_'),
  );
  it.each(extra)('%s: every field of expected_extra.json', (name, e) => {
    const t = dsmrCapture(name);
    const register = (obis: string) => {
      const m = /^1-0:([12])\.8\.(\d)$/.exec(obis)!;
      if (m[2] === '0') return m[1] === '1' ? t.importWh : t.exportWh;
      return (m[1] === '1' ? t.importByTariffWh : t.exportByTariffWh)[m[2]!];
    };
    expect(e.registers.import_wh.map(register)).toEqual(e.import_wh);
    expect(e.registers.export_wh.map(register)).toEqual(e.export_wh);
    const phase = (l: string) => t.phases[l.toUpperCase() as Phase];
    for (const [l, v] of Object.entries(e.voltage_v ?? {})) expect(phase(l)?.voltageV, `${l} V`).toBe(v);
    for (const [l, v] of Object.entries(e.current_a ?? {})) expect(phase(l)?.currentA, `${l} A`).toBe(v);
    for (const [key, w] of Object.entries(e.power_w ?? {})) {
      const [l, dir] = key.includes('_') ? key.split('_') : [undefined, key];
      const got =
        l === undefined
          ? dir === 'import'
            ? t.powerImportW
            : t.powerExportW
          : dir === 'import'
            ? phase(l)?.powerImportW
            : phase(l)?.powerExportW;
      expect(got, key).toBe(w);
    }
    expect(t.powerFailures).toBe(e.power_failures);
    expect(t.longPowerFailures).toBe(e.long_power_failures);
    expect(t.powerFailureLog).toEqual(
      e.power_failure_log?.map((x) => ({ endedAt: dsmrTimestamp(x.end), durationS: x.duration_s })),
    );
    const counts = (c: Record<string, number> | undefined) =>
      c && Object.fromEntries(Object.entries(c).map(([l, n]) => [l.toUpperCase(), n]));
    expect(t.voltageSags).toEqual(counts(e.voltage_sags));
    expect(t.voltageSwells).toEqual(counts(e.voltage_swells));
    expect(t.mbus).toEqual(
      (e.mbus ?? []).map((m) => ({
        channel: m.channel,
        deviceType: m.device_type,
        kind: m.kind,
        ...(m.unit === 'm3' ? { litres: Math.round(m.value * 1000) } : {}),
        timestamp: dsmrTimestamp(m.timestamp),
      })),
    );
    expect(t.tariff === undefined ? undefined : Number(t.tariff)).toBe(e.tariff);
    expect(t.skippedLines).toEqual([]);
    const s = dsmrSnapshot(t);
    expect(s).toMatchObject({ protocol: 'dsmr', importWh: t.importWh, exportWh: t.exportWh });
    expect(s.at).toBe(Date.parse(t.timestamp!));
  });

  it('Belgian (Fluvius): capacity-tariff peaks, 24.2.3 gas and a water channel, from the capture’s lines', () => {
    const t = dsmrCapture('telegram_fluvius_v171.txt');
    expect(t.peaks).toEqual({
      currentAverageW: 2_351,
      monthMaxW: 2_589,
      monthMaxAt: '2020-05-09T13:45:58+02:00',
      history: [
        { monthStart: '2020-05-01T00:00:00+02:00', at: '2020-04-23T19:25:38+02:00', maxW: 3_695 },
        { monthStart: '2020-04-01T00:00:00+02:00', at: '2020-03-05T12:21:39+02:00', maxW: 5_980 },
        { monthStart: '2020-03-01T00:00:00+02:00', at: '2020-02-10T03:54:21+01:00', maxW: 4_318 },
      ],
    });
    expect(t.mbus.map((m) => [m.channel, m.kind, m.litres])).toEqual([
      [1, 'gas', 112_384],
      [2, 'water', 872_234],
    ]);
    const alt = dsmrCapture('telegram_fluvius_v171_alt.txt');
    expect(alt.peaks?.history?.[0]).toEqual({ monthStart: '2023-08-01T00:00:00+02:00', maxW: 0 }); // 632525252525W
  });

  it('the other captures: ESY without CRC and W with decimals, Hungarian 98.1.0 left alone, a heat-only Warmtelink', () => {
    expect(dsmrCapture('telegram_esy5q3da1004_v304.txt')).toMatchObject({
      importWh: 32_549_506,
      powerImportW: 1_688,
      phases: { L1: { powerImportW: 557 }, L2: { powerImportW: 522 }, L3: { powerImportW: 609 } },
      crcChecked: false,
    });
    expect(dsmrCapture('telegram_esy5q3db1024_v304.txt')).toMatchObject({ exportWh: 19_949_322 });
    const hu = dsmrCapture('telegram_v5_eon_hu.txt');
    expect(hu).toMatchObject({ importWh: 173_640, exportWh: 627_177, skippedLines: [] });
    expect(hu.peaks).toBeUndefined();
    expect(dsmrCapture('telegram_v5_two_mbus.txt').mbus.map((m) => [m.channel, m.litres])).toEqual([
      [1, 0],
      [2, 246_138],
    ]);
    // CRC of 3 hex digits checks; no electricity register: not a reading for the TRE.
    const heat = parseDsmrTelegram(new TelegramFramer().push(read('dsmr/telegram_unpadded_crc.txt'))[0]!);
    expect(heat).toMatchObject({ ok: false, reason: 'NO_ENERGY_REGISTER' });
  });

  it('through the serial stack: every capture in one stream, split in odd reads, one corrupted', async () => {
    const names = readdirSync(`${CAPTURES}dsmr`).filter(
      (n) => n.endsWith('.txt') && n !== 'telegram_unpadded_crc.txt', // a heat meter's, rejected
    );
    const good = names.map((n) => read(`dsmr/${n}`));
    const corrupt = Buffer.from(
      read('dsmr/telegram_v5.txt').toString('latin1').replace('230.0', '231.0'),
      'latin1',
    );
    MockBinding.createPort('/dev/ttyP1', { echo: false, record: false });
    const reader = new MeterReader({ path: '/dev/ttyP1', binding: MockBinding as never, clock: timers });
    const got: DsmrTelegram[] = [];
    reader.on('telegram', (t) => got.push(t));
    const opened = new Promise((r) => reader.once('state', r));
    reader.start();
    await opened;
    const stream = Buffer.concat([
      ...good.slice(0, 3),
      corrupt,
      ...good.slice(3),
      read('dsmr/telegram_unpadded_crc.txt'),
    ]);
    const port = (reader.stream as unknown as { port: { emitData(b: Buffer): void } }).port;
    for (let i = 0; i < stream.length; i += 61) port.emitData(stream.subarray(i, i + 61));
    await new Promise((r) => setTimeout(r, 50));
    expect(got).toEqual(names.map(dsmrCapture));
    expect(reader.stats).toEqual({ telegrams: good.length, crcErrors: 1, rejected: 1, skippedLines: 0 });
    await reader.stop();
  });
});

describe.runIf(present)('SML captures', () => {
  interface Expected {
    crc: 'ok' | 'bad';
    values: Record<string, number>;
  }
  const expected = Object.entries(json('sml/expected.json') as Record<string, Expected>).filter(
    ([name]) => !name.startsWith('_'),
  );
  const good = expected.filter(([, e]) => e.crc === 'ok');
  const readout = (name: string): SmlReadout => {
    const r = parseSmlFile(read(`sml/${name}`));
    if (!r.ok) throw new Error(`${name} rejected: ${r.reason} ${r.detail}`);
    return r.readout;
  };

  it.each(good)('%s: every value of expected.json', (name, e) => {
    const r = readout(name);
    for (const [obis, v] of Object.entries(e.values)) expect(r.registers[obis], obis).toBeCloseTo(v, 6);
    const energy = (dir: '1' | '2') => {
      const tariffs = Object.entries(e.values).filter(([o]) => new RegExp(`^1-0:${dir}\\.8\\.[1-9]`).test(o));
      const total = e.values[`1-0:${dir}.8.0`];
      for (const [o, v] of tariffs)
        expect((dir === '1' ? r.importByTariffWh : r.exportByTariffWh)[o.slice(8)], o).toBe(Math.trunc(v));
      const wh = total ?? tariffs.reduce((a, [, v]) => a + v, 0);
      expect(dir === '1' ? r.importWh : r.exportWh, `${dir}.8 total`).toBe(Math.trunc(wh + 1e-9));
    };
    energy('1');
    energy('2');
    const net = e.values['1-0:16.7.0'];
    if (net !== undefined) {
      expect(r.powerImportW).toBeCloseTo(Math.max(net, 0), 6);
      expect(r.powerExportW).toBeCloseTo(Math.max(-net, 0), 6);
    }
    const phases: [Phase, string, string, string][] = [
      ['L1', '36', '32', '31'],
      ['L2', '56', '52', '51'],
      ['L3', '76', '72', '71'],
    ];
    for (const [l, p, v, a] of phases) {
      const power = e.values[`1-0:${p}.7.0`];
      if (power !== undefined) {
        expect(r.phases[l]?.powerImportW).toBeCloseTo(Math.max(power, 0), 6);
        expect(r.phases[l]?.powerExportW).toBeCloseTo(Math.max(-power, 0), 6);
      }
      expect(r.phases[l]?.voltageV).toBe(e.values[`1-0:${v}.7.0`]);
      expect(r.phases[l]?.currentA).toBe(e.values[`1-0:${a}.7.0`]);
    }
    expect(r.skippedLines).toEqual([]);
    expect(smlSnapshot(r)).toMatchObject({ protocol: 'sml', importWh: r.importWh, mbus: [] });
  });

  it('DZG generator meter: a 2-byte signed negative power is export (-105.5 W), not 549.86 W', () => {
    expect(readout('dzg_dvs7420_2v_g2_mtr2_neg.bin')).toMatchObject({ powerImportW: 0, powerExportW: 105.5 });
  });

  it('rejects the truncated capture and the tampered one with a reason', () => {
    const bad = expected.filter(([, e]) => e.crc === 'bad').map(([name]) => name);
    expect(bad).toHaveLength(2);
    for (const name of bad)
      expect(parseSmlFile(read(`sml/${name}`)), name).toMatchObject({ ok: false, reason: 'CRC_MISMATCH' });
    // The tampered frame with its transport CRC made to fit: the GetList.Res message's own CRC catches it.
    const tampered = Buffer.from(read('sml/tampered_iskra_mt175_d1a52_v22_k0t.bin'));
    tampered.writeUInt16LE(crc16X25(tampered.subarray(0, tampered.length - 2)), tampered.length - 2);
    expect(parseSmlFile(tampered)).toMatchObject({ ok: false, reason: 'MESSAGE_CRC_MISMATCH' });
  });

  it('through the serial stack: every capture in one stream with noise, split in odd reads', async () => {
    MockBinding.createPort('/dev/ttyIR', { echo: false, record: false });
    const reader = new SmlReader({ path: '/dev/ttyIR', binding: MockBinding as never, clock: timers });
    const got: [SmlReadout, number][] = [];
    const rejected: string[] = [];
    reader.on('readout', (r, at) => got.push([r, at]));
    reader.on('rejected', (reason) => rejected.push(reason));
    const opened = new Promise((r) => reader.once('state', r));
    reader.start();
    await opened;
    const stream = Buffer.concat(
      expected.flatMap(([name]) => [Buffer.from([0x00, 0xff, 0x1b, 0x42]), read(`sml/${name}`)]),
    );
    const port = (reader.stream as unknown as { port: { emitData(b: Buffer): void } }).port;
    for (let i = 0; i < stream.length; i += 53) port.emitData(stream.subarray(i, i + 53));
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map(([r]) => r.importWh)).toEqual(good.map(([name]) => readout(name).importWh));
    expect(got.every(([r, at]) => r.at === undefined && at === 5_000)).toBe(true); // no meter time sent
    expect(rejected).toEqual(['CRC_MISMATCH', 'CRC_MISMATCH']);
    expect(reader.stats).toEqual({ telegrams: good.length, crcErrors: 2, rejected: 0, skippedLines: 0 });
    await reader.stop();
  });
});
