/**
 * SML files (SML 1.04) as German meters send them through an IR head, read to registers: the
 * transport frame checked (`sml-transport.ts`, CRC-16/X-25), each message's own CRC checked, and the
 * value list of every SML_GetList.Res read: OBIS code, unit, scaler, value. A file that fails a CRC,
 * is malformed, has no import register (1-0:1.8.x) or a malformed energy register is rejected with
 * a reason, never half-read; any other unreadable entry is skipped and its OBIS code kept.
 * Energy (unit 30, Wh) becomes integer Wh by integer arithmetic on raw x 10^scaler (extra decimals
 * truncated); powers, voltages and currents are numbers (raw x 10^scaler), net power (16.7.0, signed)
 * split into import and export.
 */
import { crc16X25 } from './crc16.js';
import type { MeterRegisters, MeterSnapshot, Phase, PhaseValues } from './meter-snapshot.js';
import { decodeSml, encodeSml, SmlDecodeError, type SmlValue, sml } from './sml-tlv.js';
import { unwrapSmlFile, wrapSmlFile } from './sml-transport.js';

/** DLMS unit codes SML entries use. */
export const SML_UNIT = { W: 27, Wh: 30, A: 33, V: 35, Hz: 44 } as const;

const GET_LIST_RES = 0x0701;
const OPEN_RES = 0x0101;
const CLOSE_RES = 0x0201;

export interface SmlReadout extends MeterRegisters {
  /** Meter time (ms since epoch) when the meter sends a timestamp, not only seconds since power-on. */
  at?: number;
  phases: Partial<Record<Phase, PhaseValues>>;
  /** Every numeric entry by OBIS code (`*F` only when F is not 255): raw x 10^scaler in its unit. */
  registers: Record<string, number>;
  /** OBIS codes of entries that could not be read (never their values). */
  skippedLines: string[];
}

export type SmlRejection =
  | 'CRC_MISMATCH'
  | 'MESSAGE_CRC_MISMATCH'
  | 'TRUNCATED'
  | 'MALFORMED'
  | 'MALFORMED_VALUE'
  | 'NO_ENERGY_REGISTER';

export type ParsedSmlFile =
  | { ok: true; readout: SmlReadout }
  | { ok: false; reason: SmlRejection; detail: string };

interface Entry {
  obis: string;
  unit?: number;
  scaler: number;
  value: SmlValue;
}

/** `A-B:C.D.E`, with `*F` when F is not 255. */
export function obisOf(bytes: Uint8Array): string | undefined {
  if (bytes.length !== 6) return undefined;
  const [a, b, c, d, e, f] = bytes;
  return `${a}-${b}:${c}.${d}.${e}${f === 255 ? '' : `*${f}`}`;
}

const optional = (v: SmlValue | undefined) =>
  v === undefined || (v.type === 'octets' && v.bytes.length === 0) ? undefined : v;
const intOf = (v: SmlValue | undefined) => (v?.type === 'int' || v?.type === 'uint' ? v.value : undefined);
const swap16 = (n: number) => ((n & 0xff) << 8) | (n >> 8);

/** The messages of a file body, each CRC checked; the GetList.Res bodies' value lists and time. */
function readMessages(body: Buffer): { entries: Entry[]; at?: number } {
  const entries: Entry[] = [];
  let at: number | undefined;
  let pos = 0;
  while (pos < body.length) {
    if (body[pos] === 0x00) {
      pos++;
      continue;
    }
    const start = pos;
    if (body[pos] !== 0x76) throw new SmlDecodeError(`no SML message at ${pos}`);
    pos++;
    const items: SmlValue[] = [];
    for (let i = 0; i < 4; i++) {
      const d = decodeSml(body, pos);
      items.push(d.value);
      pos = d.next;
    }
    const crcEnd = pos;
    const crc = decodeSml(body, pos);
    pos = crc.next;
    const end = decodeSml(body, pos);
    pos = end.next;
    const stored = intOf(crc.value);
    if (stored === undefined || end.value.type !== 'end')
      throw new SmlDecodeError(`message at ${start} without its CRC and end`);
    if (Number(stored) !== swap16(crc16X25(body.subarray(start, crcEnd))))
      throw new MessageCrcError(`message at ${start}`);
    const msgBody = items[3];
    if (msgBody?.type !== 'list' || msgBody.items.length !== 2)
      throw new SmlDecodeError(`message at ${start} without a body`);
    const tag = intOf(msgBody.items[0]);
    if (tag !== BigInt(GET_LIST_RES)) continue;
    const res = msgBody.items[1];
    if (res?.type !== 'list' || res.items.length < 5) throw new SmlDecodeError('malformed GetList.Res');
    at ??= sensorTime(optional(res.items[3]));
    const list = res.items[4]!;
    if (list.type !== 'list') throw new SmlDecodeError('GetList.Res without a value list');
    for (const e of list.items) {
      if (e.type !== 'list' || e.items.length !== 7 || e.items[0]?.type !== 'octets')
        throw new SmlDecodeError('malformed list entry');
      const obis = obisOf(e.items[0].bytes);
      if (!obis) continue; // not an OBIS name: not read
      const unit = intOf(optional(e.items[3]));
      const scaler = intOf(optional(e.items[4]));
      entries.push({
        obis,
        ...(unit !== undefined ? { unit: Number(unit) } : {}),
        scaler: Number(scaler ?? 0n),
        value: e.items[5]!,
      });
    }
  }
  return { entries, ...(at !== undefined ? { at } : {}) };
}

class MessageCrcError extends Error {}

/** SML_Time: 1 = seconds since power-on (no clock time), 2 = UNIX timestamp, 3 = local timestamp list. */
function sensorTime(v: SmlValue | undefined): number | undefined {
  if (v?.type !== 'list' || v.items.length !== 2) return undefined;
  const choice = intOf(v.items[0]);
  const value = v.items[1];
  const seconds =
    choice === 2n
      ? intOf(value)
      : choice === 3n && value?.type === 'list'
        ? intOf(value.items[0])
        : undefined;
  return seconds !== undefined && seconds > 0n ? Number(seconds) * 1000 : undefined;
}

/** Integer Wh of raw x 10^scaler parts added at full precision, truncated once; undefined if negative. */
function sumWh(parts: { raw: bigint; scaler: number }[]): number | undefined {
  if (parts.length === 0) return 0;
  const min = Math.min(0, ...parts.map((p) => p.scaler));
  let sum = 0n;
  for (const p of parts) sum += p.raw * 10n ** BigInt(p.scaler - min);
  if (sum < 0n) return undefined;
  const wh = Number(sum / 10n ** BigInt(-min));
  return Number.isSafeInteger(wh) ? wh : undefined;
}

const scaled = (raw: bigint, scaler: number) =>
  scaler < 0 ? Number(raw) / 10 ** -scaler : Number(raw) * 10 ** scaler;

/** Parses one framed SML file (from `1B1B1B1B 01010101` to its CRC). */
export function parseSmlFile(frame: Uint8Array): ParsedSmlFile {
  const file = unwrapSmlFile(frame);
  if (!file.ok) return file;
  let messages: { entries: Entry[]; at?: number };
  try {
    messages = readMessages(file.body);
  } catch (err) {
    if (err instanceof MessageCrcError)
      return { ok: false, reason: 'MESSAGE_CRC_MISMATCH', detail: `CRC of the ${err.message}` };
    if (err instanceof SmlDecodeError) return { ok: false, reason: 'MALFORMED', detail: err.message };
    throw err;
  }
  const r: SmlReadout = {
    importWh: 0,
    exportWh: 0,
    importByTariffWh: {},
    exportByTariffWh: {},
    phases: {},
    registers: {},
    skippedLines: [],
  };
  if (messages.at !== undefined) r.at = messages.at;
  const parts: Record<'import' | 'export', { tariff: string; raw: bigint; scaler: number }[]> = {
    import: [],
    export: [],
  };
  const numbers = new Map<string, { value: number; unit?: number }>();
  for (const e of messages.entries) {
    const raw = intOf(e.value);
    const reg = /^1-0:([12])\.8\.(\d+)$/.exec(e.obis);
    if (reg) {
      if (raw === undefined || e.unit !== SML_UNIT.Wh || raw < 0n)
        return { ok: false, reason: 'MALFORMED_VALUE', detail: `malformed ${e.obis}` };
      const dir = reg[1] === '1' ? 'import' : 'export';
      parts[dir].push({ tariff: reg[2]!, raw, scaler: e.scaler });
    }
    if (raw !== undefined) {
      const value = scaled(raw, e.scaler);
      r.registers[e.obis] = value;
      numbers.set(e.obis, { value, ...(e.unit !== undefined ? { unit: e.unit } : {}) });
    }
  }
  for (const dir of ['import', 'export'] as const) {
    const byTariff = dir === 'import' ? r.importByTariffWh : r.exportByTariffWh;
    for (const p of parts[dir]) {
      if (p.tariff === '0') continue;
      const wh = sumWh([p]);
      if (wh === undefined)
        return {
          ok: false,
          reason: 'MALFORMED_VALUE',
          detail: `malformed 1-0:${dir === 'import' ? 1 : 2}.8.${p.tariff}`,
        };
      byTariff[p.tariff] = wh;
    }
    const total = parts[dir].filter((p) => p.tariff === '0');
    const wh = sumWh(total.length > 0 ? total : parts[dir].filter((p) => p.tariff !== '0'));
    if (wh === undefined) return { ok: false, reason: 'MALFORMED_VALUE', detail: `malformed ${dir} total` };
    if (dir === 'import') r.importWh = wh;
    else r.exportWh = wh;
  }
  if (parts.import.length === 0)
    return { ok: false, reason: 'NO_ENERGY_REGISTER', detail: 'no 1-0:1.8.x register' };
  readPowers(r, numbers);
  return { ok: true, readout: r };
}

/** Powers, voltages and currents; an entry in the wrong unit is skipped. */
function readPowers(r: SmlReadout, numbers: Map<string, { value: number; unit?: number }>): void {
  const get = (obis: string, unit: number): number | undefined => {
    const n = numbers.get(obis);
    if (!n) return undefined;
    if (n.unit !== unit) {
      r.skippedLines.push(obis);
      return undefined;
    }
    return n.value;
  };
  const split = (net: number) => ({ importW: Math.max(net, 0), exportW: Math.max(-net, 0) });
  const direct = (
    imp: number | undefined,
    exp: number | undefined,
    net: number | undefined,
    to: PhaseValues,
  ) => {
    const n = net ?? (imp !== undefined && imp < 0 ? imp : undefined); // a signed 1.7.0 is net power
    if (n !== undefined) {
      to.powerImportW = split(n).importW;
      to.powerExportW = split(n).exportW;
    }
    if (imp !== undefined && imp >= 0) to.powerImportW = imp;
    if (exp !== undefined) to.powerExportW = exp;
  };
  const total: PhaseValues = {};
  direct(get('1-0:1.7.0', SML_UNIT.W), get('1-0:2.7.0', SML_UNIT.W), get('1-0:16.7.0', SML_UNIT.W), total);
  if (total.powerImportW !== undefined) r.powerImportW = total.powerImportW;
  if (total.powerExportW !== undefined) r.powerExportW = total.powerExportW;
  for (const [digit, phase] of [
    ['2', 'L1'],
    ['4', 'L2'],
    ['6', 'L3'],
  ] as const) {
    const p: PhaseValues = {};
    direct(
      get(`1-0:${digit}1.7.0`, SML_UNIT.W),
      get(`1-0:${digit}2.7.0`, SML_UNIT.W),
      get(`1-0:${Number(digit) * 10 + 16}.7.0`, SML_UNIT.W),
      p,
    );
    const c = String(Number(digit) + 1);
    const voltage = get(`1-0:${c}2.7.0`, SML_UNIT.V);
    const current = get(`1-0:${c}1.7.0`, SML_UNIT.A);
    if (voltage !== undefined) p.voltageV = voltage;
    if (current !== undefined) p.currentA = current;
    if (Object.keys(p).length > 0) r.phases[phase] = p;
  }
}

/** The readout as the common meter snapshot. */
export function smlSnapshot(r: SmlReadout): MeterSnapshot {
  return {
    protocol: 'sml',
    ...(r.at !== undefined ? { at: r.at } : {}),
    importWh: r.importWh,
    exportWh: r.exportWh,
    importByTariffWh: { ...r.importByTariffWh },
    exportByTariffWh: { ...r.exportByTariffWh },
    ...(r.powerImportW !== undefined ? { powerImportW: r.powerImportW } : {}),
    ...(r.powerExportW !== undefined ? { powerExportW: r.powerExportW } : {}),
    ...(Object.keys(r.phases).length > 0 ? { phases: structuredClone(r.phases) } : {}),
    mbus: [],
    skippedLines: [...r.skippedLines],
  };
}

export interface SmlEntryInput {
  /** e.g. `1-0:1.8.0` (F = 255) or `1-0:0.2.0*0`. */
  obis: string;
  unit?: number;
  scaler?: number;
  /** An integer (signed, 8 bytes unless `size`) or an octet string. */
  value: bigint | number | Uint8Array;
  size?: number;
  unsigned?: boolean;
}

function obisBytes(obis: string): Buffer {
  const m = /^(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(?:\*(\d+))?$/.exec(obis);
  if (!m) throw new TypeError(`not an OBIS code: ${obis}`);
  return Buffer.from([...m.slice(1, 6).map(Number), Number(m[6] ?? 255)]);
}

function message(transactionId: string, tag: number, content: SmlValue): Buffer {
  const head = Buffer.concat([
    Buffer.from([0x76]),
    ...[sml.octets(transactionId), sml.uint(0, 1), sml.uint(0, 1), sml.list(sml.uint(tag, 2), content)].map(
      encodeSml,
    ),
  ]);
  return Buffer.concat([head, encodeSml(sml.uint(swap16(crc16X25(head)), 2)), Buffer.from([0x00])]);
}

/**
 * An SML file as a meter sends it: OpenRes, one GetList.Res with the entries, CloseRes, each with
 * its CRC, in the transport frame (tests and simulated IR heads). `at` (ms) is sent as a timestamp;
 * without it the sensor time is seconds since power-on (`secIndex`).
 */
export function formatSmlFile(
  entries: SmlEntryInput[],
  opts: { at?: number; secIndex?: number } = {},
): Buffer {
  const serverId = sml.octets(Buffer.from([0x0a, 0x01, 0x54, 0x52, 0x45, 0x00, 0x00, 0x00, 0x00, 0x01]));
  const time =
    opts.at !== undefined
      ? sml.list(sml.uint(2, 1), sml.uint(Math.floor(opts.at / 1000), 4))
      : sml.list(sml.uint(1, 1), sml.uint(opts.secIndex ?? 1, 4));
  const list = entries.map((e) =>
    sml.list(
      sml.octets(obisBytes(e.obis)),
      sml.none(),
      sml.none(),
      e.unit !== undefined ? sml.uint(e.unit, 1) : sml.none(),
      e.scaler !== undefined ? sml.int(e.scaler, 1) : sml.none(),
      e.value instanceof Uint8Array
        ? sml.octets(e.value)
        : e.unsigned
          ? sml.uint(e.value, e.size ?? 8)
          : sml.int(e.value, e.size ?? 8),
      sml.none(),
    ),
  );
  const body = Buffer.concat([
    message(
      '\x00\x01',
      OPEN_RES,
      sml.list(sml.none(), sml.none(), sml.octets('\x00\x01'), serverId, sml.none(), sml.none()),
    ),
    message(
      '\x00\x02',
      GET_LIST_RES,
      sml.list(sml.none(), serverId, sml.none(), time, sml.list(...list), sml.none(), sml.none()),
    ),
    message('\x00\x03', CLOSE_RES, sml.list(sml.none())),
  ]);
  return wrapSmlFile(body);
}
