/**
 * DSMR P1 telegrams (2.2, 3, 4, 5 and the national variants: Belgian e-MUCS, Luxembourg, Swedish
 * and Austrian P1, Hungarian, Irish): `/XXX5ident`, data lines `OBIS(value*unit)...`, `!` and,
 * from DSMR 4 on, a CRC-16/ARC of 4 hex digits over every byte from `/` to `!` (some meters drop
 * leading zeros). A telegram that fails the CRC, is truncated, has no readable import register,
 * or has a malformed energy register (1-0:1.8.x, 1-0:2.8.x) is rejected with a reason, never
 * half-parsed. Any other malformed line is skipped and its OBIS code kept in `skippedLines`;
 * lines of codes not read here are ignored.
 * Energy registers are converted to integer Wh by string arithmetic (no floats): `kWh` values keep
 * three decimals (more are truncated), `Wh` values are taken as they are.
 */
import { crc16 } from './crc16.js';
import {
  epochMs,
  type MbusKind,
  type MeterRegisters,
  type MeterSnapshot,
  mbusKind,
  type Phase,
  type PhaseCounts,
  type PhaseValues,
} from './meter-snapshot.js';

export interface MbusChannel {
  channel: number;
  /** EN 13757-3 device type from 0-n:24.1.0 (3 gas, 7 water, 4 heat ...), when sent. */
  deviceType?: number;
  kind: MbusKind;
  /** Gas or water volume in litres (m3 x 1000), read but never sent to the TRE. */
  litres?: number;
  /** Heat, cooling or electricity energy in Wh (from kWh, MWh, GJ or MJ). */
  wh?: number;
  timestamp?: string;
}

export interface DsmrPowerFailure {
  /** End of the failure as ISO 8601, when the meter's timestamp is a real time. */
  endedAt?: string;
  durationS: number;
}

export interface DsmrDemandPeak {
  monthStart?: string;
  at?: string;
  maxW: number;
}

export interface DsmrTelegram extends MeterRegisters {
  header: string;
  /** `50` for DSMR 5.0 etc., when the meter says (1-3:0.2.8 or Belgian 0-0:96.1.4). */
  version?: string;
  /** Meter time as ISO 8601 with its UTC offset from the DST flag (Europe/Amsterdam, Brussels). */
  timestamp?: string;
  equipmentId?: string;
  /** Per-phase voltage, current and power, for the phases the meter reports. */
  phases: Partial<Record<Phase, PhaseValues>>;
  tariff?: string;
  /** 0-0:96.7.21 (any phase) and 0-0:96.7.9 (long) power failure counts. */
  powerFailures?: number;
  longPowerFailures?: number;
  /** 1-0:99.97.0: the long power failure event log. */
  powerFailureLog?: DsmrPowerFailure[];
  /** 1-0:32/52/72.32.0 and .36.0. */
  voltageSags?: PhaseCounts;
  voltageSwells?: PhaseCounts;
  /** Belgian capacity tariff: 1-0:1.4.0, 1-0:1.6.0 and the monthly peaks of 0-0:98.1.0. */
  peaks?: {
    currentAverageW?: number;
    monthMaxW?: number;
    monthMaxAt?: string;
    history?: DsmrDemandPeak[];
  };
  mbus: MbusChannel[];
  /** OBIS codes (`?` for a line without one) of malformed lines that were skipped; never values. */
  skippedLines: string[];
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
  if (!Number.isSafeInteger(value)) return undefined;
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
  if (u === 'w') return /^\d+(\.\d+)?$/.test(value) ? Math.round(Number(value)) : undefined;
  return undefined;
}

/** A decimal quantity in the given unit (case-insensitive), e.g. `230.1*V`. */
function quantity(value: string, unit: string, expected: string): number | undefined {
  return unit.toLowerCase() === expected.toLowerCase() && /^\d+(\.\d+)?$/.test(value)
    ? Number(value)
    : undefined;
}

function count(value: string, unit: string): number | undefined {
  return unit === '' && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** An M-Bus reading to litres (m3) or Wh (kWh, MWh, GJ, MJ, Wh); by the kind when no unit is sent. */
function mbusValue(
  value: string,
  unit: string,
  kind: MbusKind,
): { litres: number } | { wh: number } | undefined {
  const milli = decimalToMilli(value);
  if (milli === undefined || milli < 0) return undefined;
  switch (unit.toLowerCase()) {
    case 'm3':
      return { litres: milli };
    case 'wh':
      return /^\d+$/.test(value) ? { wh: Number(value) } : undefined;
    case 'kwh':
      return { wh: milli };
    case 'mwh':
      return { wh: milli * 1000 };
    case 'gj': // 1 GJ = 10^9 J = 277,777.7 Wh: thousandths of a GJ x 2500 / 9
      return { wh: Math.round((milli * 2500) / 9) };
    case 'mj':
      return { wh: Math.round((milli * 5) / 18) };
    case '':
      return kind === 'gas' || kind === 'water' ? { litres: milli } : undefined;
    default:
      return undefined;
  }
}

/** YYMMDDhhmmssX (X = S summer / W winter, Central European time) to ISO 8601 with offset. */
export function dsmrTimestamp(text: string): string | undefined {
  const m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)([SW])$/.exec(text);
  if (!m) return undefined;
  const [month = 0, day = 0, hour = 0, minute = 0, second = 0] = m.slice(2, 7).map(Number);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59)
    return undefined;
  return `20${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] === 'S' ? '+02:00' : '+01:00'}`;
}

const PHASE_BY_DIGIT: Record<string, Phase> = {
  '2': 'L1',
  '3': 'L1',
  '4': 'L2',
  '5': 'L2',
  '6': 'L3',
  '7': 'L3',
};

interface PendingChannel {
  deviceType?: number;
  reading?: { value: string; unit: string; timestamp?: string; obis: string };
}

/** What parsing one line found: read, malformed (skipped and counted) or not a code read here. */
type LineResult = 'read' | 'malformed' | 'ignored';

class TelegramBuilder {
  readonly t: DsmrTelegram;
  importTotal: number | undefined;
  exportTotal: number | undefined;
  readonly channels = new Map<number, PendingChannel>();
  /** DSMR 2.2/3: 0-n:24.3.0 announces the gas value on the next line. */
  pendingGas: { channel: number; unit: string; obis: string } | undefined;

  constructor(header: string, crcChecked: boolean) {
    this.t = {
      header,
      importWh: 0,
      exportWh: 0,
      importByTariffWh: {},
      exportByTariffWh: {},
      phases: {},
      mbus: [],
      skippedLines: [],
      crcChecked,
    };
  }

  private phase(p: Phase): PhaseValues {
    this.t.phases[p] ??= {};
    return this.t.phases[p];
  }

  private channel(n: number): PendingChannel {
    const c = this.channels.get(n) ?? {};
    this.channels.set(n, c);
    return c;
  }

  /** One data line other than an energy register. */
  line(obis: string, values: string[]): LineResult {
    const last = values[values.length - 1] ?? '';
    const star = last.indexOf('*');
    const [value, unit] = star < 0 ? [last, ''] : [last.slice(0, star), last.slice(star + 1)];
    const t = this.t;
    const set = <T>(v: T | undefined, assign: (v: T) => void): LineResult => {
      if (v === undefined) return 'malformed';
      assign(v);
      return 'read';
    };
    switch (obis) {
      case '1-3:0.2.8':
      case '0-0:96.1.4':
        t.version = value;
        return 'read';
      case '0-0:1.0.0':
        return set(dsmrTimestamp(value), (v) => {
          t.timestamp = v;
        });
      case '0-0:96.1.1':
        t.equipmentId = value;
        return 'read';
      case '0-0:42.0.0': // Luxembourg, Hungary: the equipment id
        t.equipmentId ??= value;
        return 'read';
      case '0-0:96.14.0':
        t.tariff = value;
        return 'read';
      case '1-0:1.7.0':
        return set(powerW(value, unit), (v) => {
          t.powerImportW = v;
        });
      case '1-0:2.7.0':
        return set(powerW(value, unit), (v) => {
          t.powerExportW = v;
        });
      case '0-0:96.7.21':
        return set(count(value, unit), (v) => {
          t.powerFailures = v;
        });
      case '0-0:96.7.9':
        return set(count(value, unit), (v) => {
          t.longPowerFailures = v;
        });
      case '1-0:99.97.0':
        return set(failureLog(values), (v) => {
          t.powerFailureLog = v;
        });
      case '1-0:1.4.0':
        return set(powerW(value, unit), (v) => {
          t.peaks = { ...t.peaks, currentAverageW: v };
        });
      case '1-0:1.6.0': {
        const at = dsmrTimestamp(values[0] ?? '');
        return set(values.length === 2 ? powerW(value, unit) : undefined, (v) => {
          t.peaks = { ...t.peaks, monthMaxW: v, ...(at ? { monthMaxAt: at } : {}) };
        });
      }
      case '0-0:98.1.0':
        // Belgian: (n)(1-0:1.6.0)(1-0:1.6.0) then n x (month)(time)(kW). Other layouts (Hungary's
        // monthly billing values) are not read.
        if (values[1] !== '1-0:1.6.0') return 'ignored';
        return set(peakHistory(values), (v) => {
          t.peaks = { ...t.peaks, history: v };
        });
    }
    let m = /^1-0:([357])([12])\.7\.0$/.exec(obis);
    if (m) {
      const p = PHASE_BY_DIGIT[m[1]!]!;
      return m[2] === '2'
        ? set(quantity(value, unit, 'V'), (v) => {
            this.phase(p).voltageV = v;
          })
        : set(quantity(value, unit, 'A'), (v) => {
            this.phase(p).currentA = v;
          });
    }
    m = /^1-0:([246])([12])\.7\.0$/.exec(obis);
    if (m) {
      const p = PHASE_BY_DIGIT[m[1]!]!;
      return set(powerW(value, unit), (v) => {
        if (m![2] === '1') this.phase(p).powerImportW = v;
        else this.phase(p).powerExportW = v;
      });
    }
    m = /^1-0:([357])2\.(32|36)\.0$/.exec(obis);
    if (m) {
      const p = PHASE_BY_DIGIT[m[1]!]!;
      return set(count(value, unit), (v) => {
        if (m![2] === '32') t.voltageSags = { ...t.voltageSags, [p]: v };
        else t.voltageSwells = { ...t.voltageSwells, [p]: v };
      });
    }
    m = /^0-(\d):24\.(1\.0|2\.1|2\.3|3\.0)$/.exec(obis);
    if (m) {
      const c = this.channel(Number(m[1]));
      switch (m[2]) {
        case '1.0':
          return set(count(value, unit), (v) => {
            c.deviceType = v;
          });
        case '3.0':
          // (time)(00)(60)(1)(0-n:24.2.1)(m3), the value on the next line
          this.pendingGas = { channel: Number(m[1]), unit: values[5] ?? '', obis };
          return 'read';
        default:
          if (values.length !== 2) return 'malformed';
          c.reading = { value, unit, timestamp: dsmrTimestamp(values[0]!), obis };
          return 'read';
      }
    }
    return 'ignored';
  }

  /** The line after 0-n:24.3.0: `(value)`. */
  gasValue(line: string): LineResult {
    const p = this.pendingGas!;
    this.pendingGas = undefined;
    const v = /^\(([^()*]*)\)$/.exec(line);
    if (!v) return 'malformed';
    this.channel(p.channel).reading = { value: v[1]!, unit: p.unit, obis: p.obis };
    return 'read';
  }

  finish(): void {
    for (const [channel, c] of [...this.channels].sort((a, b) => a[0] - b[0])) {
      if (!c.reading) continue; // a channel without a reading (an empty id line) says nothing
      const kind = mbusKind(c.deviceType);
      const v = mbusValue(c.reading.value, c.reading.unit, kind);
      if (!v) {
        this.t.skippedLines.push(c.reading.obis);
        continue;
      }
      this.t.mbus.push({
        channel,
        ...(c.deviceType !== undefined ? { deviceType: c.deviceType } : {}),
        kind,
        ...v,
        ...(c.reading.timestamp ? { timestamp: c.reading.timestamp } : {}),
      });
    }
  }
}

/** `(n)(0-0:96.7.19)` then n x `(end)(seconds*s)`. */
function failureLog(values: string[]): DsmrPowerFailure[] | undefined {
  const n = count(values[0] ?? '', '');
  if (n === undefined || values[1] !== '0-0:96.7.19' || values.length !== 2 + 2 * n) return undefined;
  const out: DsmrPowerFailure[] = [];
  for (let i = 2; i < values.length; i += 2) {
    const d = /^(\d+)\*s$/.exec(values[i + 1]!);
    if (!d) return undefined;
    const endedAt = dsmrTimestamp(values[i]!);
    out.push({ ...(endedAt ? { endedAt } : {}), durationS: Number(d[1]) });
  }
  return out;
}

/** `(n)(1-0:1.6.0)(1-0:1.6.0)` then n x `(month start)(time of the peak)(kW)`. */
function peakHistory(values: string[]): DsmrDemandPeak[] | undefined {
  const n = count(values[0] ?? '', '');
  if (n === undefined || values[2] !== '1-0:1.6.0' || values.length !== 3 + 3 * n) return undefined;
  const out: DsmrDemandPeak[] = [];
  for (let i = 3; i < values.length; i += 3) {
    const [value, unit = ''] = values[i + 2]!.split('*');
    const maxW = powerW(value!, unit);
    if (maxW === undefined) return undefined;
    // A month without a peak may carry a placeholder time (e.g. 632525252525W): left out.
    const monthStart = dsmrTimestamp(values[i]!);
    const at = dsmrTimestamp(values[i + 1]!);
    out.push({ ...(monthStart ? { monthStart } : {}), ...(at ? { at } : {}), maxW });
  }
  return out;
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
  if (!/^\/[A-Za-z]{3}/.test(header))
    return { ok: false, reason: 'NO_HEADER', detail: 'malformed identification line' };
  const b = new TelegramBuilder(header, crcChecked);
  const t = b.t;
  for (const rawLine of lines.slice(1)) {
    const line = rawLine.trim();
    if (!line) continue;
    if (b.pendingGas && line.startsWith('(')) {
      const obis = b.pendingGas.obis;
      if (b.gasValue(line) === 'malformed') t.skippedLines.push(obis);
      continue;
    }
    b.pendingGas = undefined;
    const m = /^(\d+-\d+:\d+\.\d+\.\d+)(?:\*\d+)?(.*)$/.exec(line);
    if (!m) {
      t.skippedLines.push('?');
      continue;
    }
    const obis = m[1]!;
    const values = /^(?:\([^()]*\))+$/.test(m[2]!)
      ? [...m[2]!.matchAll(/\(([^()]*)\)/g)].map((x) => x[1]!)
      : undefined;
    const reg = /^1-0:([12])\.8\.(\d+)$/.exec(obis);
    if (reg) {
      const [value = '', unit = ''] = (values?.[values.length - 1] ?? '').split('*');
      const wh = values?.length === 1 ? energyWh(value, unit) : undefined;
      if (wh === undefined) return { ok: false, reason: 'MALFORMED_VALUE', detail: `malformed ${obis}` };
      const imp = reg[1] === '1';
      if (reg[2] === '0') {
        if (imp) b.importTotal = wh;
        else b.exportTotal = wh;
      } else if (imp) t.importByTariffWh[reg[2]!] = wh;
      else t.exportByTariffWh[reg[2]!] = wh;
      continue;
    }
    if (!values || b.line(obis, values) === 'malformed') t.skippedLines.push(obis);
  }
  b.finish();
  const tariffs = Object.values(t.importByTariffWh);
  if (tariffs.length === 0 && b.importTotal === undefined)
    return { ok: false, reason: 'NO_ENERGY_REGISTER', detail: 'no 1-0:1.8.x register' };
  t.importWh = b.importTotal ?? tariffs.reduce((a, v) => a + v, 0);
  t.exportWh = b.exportTotal ?? Object.values(t.exportByTariffWh).reduce((a, v) => a + v, 0);
  return { ok: true, telegram: t };
}

/** The telegram as the common meter snapshot (times to ms since epoch). */
export function dsmrSnapshot(t: DsmrTelegram): MeterSnapshot {
  const p = t.peaks;
  const s: MeterSnapshot = {
    protocol: 'dsmr',
    importWh: t.importWh,
    exportWh: t.exportWh,
    importByTariffWh: { ...t.importByTariffWh },
    exportByTariffWh: { ...t.exportByTariffWh },
    mbus: t.mbus.map(({ timestamp, ...c }) => {
      const at = epochMs(timestamp);
      return at === undefined ? c : { ...c, at };
    }),
    skippedLines: [...t.skippedLines],
  };
  const at = epochMs(t.timestamp);
  if (at !== undefined) s.at = at;
  if (t.powerImportW !== undefined) s.powerImportW = t.powerImportW;
  if (t.powerExportW !== undefined) s.powerExportW = t.powerExportW;
  if (Object.keys(t.phases).length > 0) s.phases = structuredClone(t.phases);
  if (t.tariff !== undefined) s.tariff = t.tariff;
  if (t.powerFailures !== undefined) s.powerFailures = t.powerFailures;
  if (t.longPowerFailures !== undefined) s.longPowerFailures = t.longPowerFailures;
  if (t.powerFailureLog)
    s.powerFailureLog = t.powerFailureLog.map((e) => {
      const endedAt = epochMs(e.endedAt);
      return endedAt === undefined ? { durationS: e.durationS } : { endedAt, durationS: e.durationS };
    });
  if (t.voltageSags) s.voltageSags = { ...t.voltageSags };
  if (t.voltageSwells) s.voltageSwells = { ...t.voltageSwells };
  if (p) {
    const monthMaxAt = epochMs(p.monthMaxAt);
    s.peaks = {
      ...(p.currentAverageW !== undefined ? { currentAverageW: p.currentAverageW } : {}),
      ...(p.monthMaxW !== undefined ? { monthMaxW: p.monthMaxW } : {}),
      ...(monthMaxAt !== undefined ? { monthMaxAt } : {}),
      ...(p.history
        ? {
            history: p.history.map((h) => {
              const monthStart = epochMs(h.monthStart);
              const hAt = epochMs(h.at);
              return {
                ...(monthStart !== undefined ? { monthStart } : {}),
                ...(hAt !== undefined ? { at: hAt } : {}),
                maxW: h.maxW,
              };
            }),
          }
        : {}),
    };
  }
  return s;
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
