/**
 * DSMR P1 telegrams (2.2, 3, 4, 5 and the Belgian e-MUCS variant): `/XXX5ident`, data lines
 * `OBIS(value*unit)`, `!` and, from DSMR 4 on, a CRC-16/ARC of 4 hex digits over every byte from
 * `/` to `!` (some meters drop leading zeros). A telegram that fails the CRC, is truncated, or has
 * no readable energy register is rejected with a reason, never half-parsed.
 * Energy registers are converted to integer Wh by string arithmetic (no floats): `kWh` values keep
 * three decimals (more are truncated), `Wh` values are taken as they are.
 */
import { crc16 } from './crc16.js';

export interface MbusChannel {
  channel: number;
  /** Gas or water volume in litres (m3 x 1000), read but never sent to the TRE. */
  litres: number;
  timestamp?: string;
}

export interface DsmrTelegram {
  header: string;
  /** `50` for DSMR 5.0 etc., when the meter says (1-3:0.2.8 or Belgian 0-0:96.1.4). */
  version?: string;
  /** Meter time as ISO 8601 with its UTC offset from the DST flag (Europe/Amsterdam, Brussels). */
  timestamp?: string;
  equipmentId?: string;
  importWh: number;
  exportWh: number;
  /** Per-tariff registers, e.g. { '1': 123456, '2': 789 }. */
  importByTariffWh: Record<string, number>;
  exportByTariffWh: Record<string, number>;
  powerImportW?: number;
  powerExportW?: number;
  tariff?: string;
  mbus: MbusChannel[];
  crcChecked: boolean;
}

export type TelegramRejection =
  | 'CRC_MISMATCH'
  | 'TRUNCATED'
  | 'NO_HEADER'
  | 'NO_ENERGY_REGISTER'
  | 'MALFORMED_VALUE';

export type ParsedTelegram =
  | { ok: true; telegram: DsmrTelegram }
  | { ok: false; reason: TelegramRejection; detail: string };

/** Integer thousandths from a decimal string ("000123.456" -> 123456), truncating extra digits. */
export function decimalToMilli(text: string): number | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!m) return undefined;
  const frac = (m[3] ?? '').padEnd(3, '0').slice(0, 3);
  const value = Number(m[2]) * 1000 + Number(frac);
  return m[1] ? -value : value;
}

function energyWh(value: string, unit: string): number | undefined {
  const u = unit.toLowerCase();
  if (u === 'kwh') return decimalToMilli(value);
  if (u === 'wh') return /^\d+$/.test(value.trim()) ? Number(value.trim()) : undefined;
  return undefined;
}

function powerW(value: string, unit: string): number | undefined {
  const u = unit.toLowerCase();
  if (u === 'kw') return decimalToMilli(value);
  if (u === 'w') return /^\d+$/.test(value.trim()) ? Number(value.trim()) : undefined;
  return undefined;
}

/** YYMMDDhhmmssX (X = S summer / W winter, Central European time) to ISO 8601 with offset. */
export function dsmrTimestamp(text: string): string | undefined {
  const m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)([SW])$/.exec(text);
  if (!m) return undefined;
  return `20${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] === 'S' ? '+02:00' : '+01:00'}`;
}

export function parseDsmrTelegram(raw: string): ParsedTelegram {
  const start = raw.indexOf('/');
  if (start < 0) return { ok: false, reason: 'NO_HEADER', detail: 'no "/" header' };
  const text = raw.slice(start);
  const bang = text.lastIndexOf('!');
  if (bang < 0) return { ok: false, reason: 'TRUNCATED', detail: 'no "!" end marker' };
  const crcText = text.slice(bang + 1).trim();
  let crcChecked = false;
  if (crcText.length > 0) {
    if (!/^[0-9A-Fa-f]{1,4}$/.test(crcText))
      return { ok: false, reason: 'TRUNCATED', detail: 'malformed CRC' };
    const expected = Number.parseInt(crcText, 16);
    const actual = crc16(Buffer.from(text.slice(0, bang + 1), 'latin1'));
    if (expected !== actual)
      return {
        ok: false,
        reason: 'CRC_MISMATCH',
        detail: `CRC ${crcText} != ${actual.toString(16).toUpperCase().padStart(4, '0')}`,
      };
    crcChecked = true;
  }
  const lines = text.slice(0, bang).split(/\r?\n/);
  const header = lines[0]!.trim();
  if (!/^\/[A-Za-z]{3}\d/.test(header))
    return { ok: false, reason: 'NO_HEADER', detail: 'malformed identification line' };
  const t: DsmrTelegram = {
    header,
    importWh: 0,
    exportWh: 0,
    importByTariffWh: {},
    exportByTariffWh: {},
    mbus: [],
    crcChecked,
  };
  let total: number | undefined;
  let pendingGas: number | undefined; // DSMR 2.2/3: the gas value is on the next line
  for (const rawLine of lines.slice(1)) {
    const line = rawLine.trim();
    if (!line) continue;
    if (pendingGas !== undefined && line.startsWith('(')) {
      const v = /^\((\d+(?:\.\d+)?)\)$/.exec(line);
      if (v) t.mbus.push({ channel: pendingGas, litres: decimalToMilli(v[1]!) ?? 0 });
      pendingGas = undefined;
      continue;
    }
    const m = /^(\d+-\d+:\d+\.\d+\.\d+)(?:\*255)?((?:\([^)]*\))+)$/.exec(line);
    if (!m) continue; // unknown or vendor lines are skipped, not guessed at
    const obis = m[1]!;
    const values = [...m[2]!.matchAll(/\(([^)]*)\)/g)].map((x) => x[1]!);
    const [value = '', unit = ''] = (values[values.length - 1] ?? '').split('*');
    const reg = /^1-0:([12])\.8\.(\d)$/.exec(obis);
    if (reg) {
      const wh = energyWh(value, unit);
      if (wh === undefined)
        return { ok: false, reason: 'MALFORMED_VALUE', detail: `${obis}(${values.join(')(')})` };
      if (reg[2] === '0') {
        if (reg[1] === '1') total = wh;
      } else if (reg[1] === '1') t.importByTariffWh[reg[2]!] = wh;
      else t.exportByTariffWh[reg[2]!] = wh;
      continue;
    }
    const gas = /^0-(\d):24\.(2\.1|3\.0)$/.exec(obis);
    if (gas) {
      if (gas[2] === '3.0') pendingGas = Number(gas[1]);
      else {
        const litres = decimalToMilli(value);
        if (litres !== undefined)
          t.mbus.push({ channel: Number(gas[1]), litres, timestamp: dsmrTimestamp(values[0] ?? '') });
      }
      continue;
    }
    switch (obis) {
      case '1-3:0.2.8':
      case '0-0:96.1.4':
        t.version = value;
        break;
      case '0-0:1.0.0':
        t.timestamp = dsmrTimestamp(value);
        break;
      case '0-0:96.1.1':
        t.equipmentId = value;
        break;
      case '0-0:96.14.0':
        t.tariff = value;
        break;
      case '1-0:1.7.0':
        t.powerImportW = powerW(value, unit);
        break;
      case '1-0:2.7.0':
        t.powerExportW = powerW(value, unit);
        break;
    }
  }
  const tariffs = Object.values(t.importByTariffWh);
  if (tariffs.length === 0 && total === undefined)
    return { ok: false, reason: 'NO_ENERGY_REGISTER', detail: 'no 1-0:1.8.x register' };
  t.importWh = tariffs.length > 0 ? tariffs.reduce((a, b) => a + b, 0) : total!;
  t.exportWh = Object.values(t.exportByTariffWh).reduce((a, b) => a + b, 0);
  return { ok: true, telegram: t };
}

export interface TelegramFields {
  header?: string;
  timestamp: Date;
  dst: boolean;
  importWh: [number, number];
  exportWh?: [number, number];
  powerW?: number;
}

const kwh = (wh: number) =>
  `${String(Math.floor(wh / 1000)).padStart(6, '0')}.${String(wh % 1000).padStart(3, '0')}*kWh`;
const two = (n: number) => String(n).padStart(2, '0');

/** A valid DSMR telegram (5: with CRC; 3: without) from values; the simulator's meters use it. */
export function formatDsmrTelegram(f: TelegramFields, version: 3 | 5 = 5): string {
  const local = new Date(f.timestamp.getTime() + (f.dst ? 2 : 1) * 3_600_000);
  const ts = `${two(local.getUTCFullYear() % 100)}${two(local.getUTCMonth() + 1)}${two(local.getUTCDate())}${two(local.getUTCHours())}${two(local.getUTCMinutes())}${two(local.getUTCSeconds())}${f.dst ? 'S' : 'W'}`;
  const [e1, e2] = f.exportWh ?? [0, 0];
  const body = [
    f.header ?? (version === 5 ? '/TRE5\\2SIM-METER' : '/TRE3SIM-METER'),
    '',
    ...(version === 5 ? ['1-3:0.2.8(50)'] : []),
    `0-0:1.0.0(${ts})`,
    `1-0:1.8.1(${kwh(f.importWh[0])})`,
    `1-0:1.8.2(${kwh(f.importWh[1])})`,
    `1-0:2.8.1(${kwh(e1)})`,
    `1-0:2.8.2(${kwh(e2)})`,
    `1-0:1.7.0(${((f.powerW ?? 0) / 1000).toFixed(3).padStart(6, '0')}*kW)`,
    '!',
  ].join('\r\n');
  if (version === 3) return `${body}\r\n`;
  return `${body}${crc16(Buffer.from(body, 'latin1')).toString(16).toUpperCase().padStart(4, '0')}\r\n`;
}
