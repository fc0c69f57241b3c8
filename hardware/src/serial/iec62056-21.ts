/**
 * IEC 62056-21 ("D0") mode C readout, as optical heads deliver it: the reader sends `/?!` CR LF at
 * 300 baud 7E1, the meter identifies itself (`/XXXZ...`, Z = the baud rate it can switch to), the
 * reader acknowledges (ACK `0 Z 0` CR LF) and both switch; the data block follows between STX and
 * `!` CR LF ETX, then a block check character: the XOR of every byte after STX up to and including
 * ETX. A block with a wrong BCC, or without an energy register, is rejected, never half-parsed.
 */
import { decimalToMilli } from './dsmr-telegram.js';
import type { MeterSnapshot } from './meter-snapshot.js';

const STX = 0x02;
const ETX = 0x03;
export const BAUD_BY_CODE: Record<string, number> = {
  '0': 300,
  '1': 600,
  '2': 1_200,
  '3': 2_400,
  '4': 4_800,
  '5': 9_600,
  '6': 19_200,
};

/** What the reader sends to start a mode C readout. */
export const SIGN_ON = Buffer.from('/?!\r\n', 'latin1');

/** The acknowledgement that switches to the meter's baud rate (mode C, data readout). */
export function acknowledge(baudCode: string): Buffer {
  return Buffer.from(`\x060${baudCode}0\r\n`, 'latin1');
}

/** The meter's identification line, e.g. `/ISK5ME382-1000` -> manufacturer ISK, baud code 5 (9600). */
export function parseIdentification(
  line: string,
): { manufacturer: string; baudCode: string; baudRate: number } | undefined {
  const m = /^\/([A-Za-z]{3})([0-6])/.exec(line.trim());
  return m ? { manufacturer: m[1]!, baudCode: m[2]!, baudRate: BAUD_BY_CODE[m[2]!]! } : undefined;
}

export interface ModeCReadout {
  importWh: number;
  exportWh: number;
  importByTariffWh: Record<string, number>;
  exportByTariffWh: Record<string, number>;
  meterId?: string;
}

export type ParsedReadout =
  | { ok: true; readout: ModeCReadout }
  | { ok: false; reason: 'BCC_MISMATCH' | 'TRUNCATED' | 'NO_ENERGY_REGISTER'; detail: string };

export function parseModeCDataBlock(bytes: Uint8Array): ParsedReadout {
  const buf = Buffer.from(bytes);
  const stx = buf.indexOf(STX);
  const etx = stx < 0 ? -1 : buf.indexOf(ETX, stx + 1);
  if (stx < 0 || etx < 0 || etx + 1 >= buf.length)
    return { ok: false, reason: 'TRUNCATED', detail: 'no STX ... ETX BCC block' };
  let bcc = 0;
  for (let i = stx + 1; i <= etx; i++) bcc ^= buf[i]!;
  if (bcc !== buf[etx + 1])
    return { ok: false, reason: 'BCC_MISMATCH', detail: `BCC ${buf[etx + 1]} != ${bcc}` };
  const text = buf.subarray(stx + 1, etx).toString('latin1');
  if (!text.includes('!')) return { ok: false, reason: 'TRUNCATED', detail: 'no "!" end of data' };
  const readout: ModeCReadout = { importWh: 0, exportWh: 0, importByTariffWh: {}, exportByTariffWh: {} };
  let total: number | undefined;
  let exportTotal: number | undefined;
  for (const line of text.split(/\r?\n/)) {
    const m = /^(?:1-0:)?([12])\.8\.(\d)(?:\*\d+)?\(([^)*]+)\*(k?Wh)\)/i.exec(line.trim());
    if (m) {
      const wh = m[4]!.toLowerCase() === 'kwh' ? decimalToMilli(m[3]!) : Number(m[3]);
      if (wh === undefined || !Number.isSafeInteger(wh)) continue;
      if (m[1] === '1') {
        if (m[2] === '0') total = wh;
        else readout.importByTariffWh[m[2]!] = wh;
      } else if (m[2] === '0') exportTotal = wh;
      else readout.exportByTariffWh[m[2]!] = wh;
      continue;
    }
    const id = /^(?:0-0:)?(?:0\.0\.0|C\.1\.0|96\.1\.0)\(([^)]*)\)/.exec(line.trim());
    if (id) readout.meterId = id[1];
  }
  const tariffs = Object.values(readout.importByTariffWh);
  if (total === undefined && tariffs.length === 0)
    return { ok: false, reason: 'NO_ENERGY_REGISTER', detail: 'no 1.8.x register' };
  readout.importWh = total ?? tariffs.reduce((a, b) => a + b, 0);
  readout.exportWh = exportTotal ?? Object.values(readout.exportByTariffWh).reduce((a, b) => a + b, 0);
  return { ok: true, readout };
}

/** The readout as the common meter snapshot (mode C meters send registers, rarely their time). */
export function modeCSnapshot(r: ModeCReadout): MeterSnapshot {
  return {
    protocol: 'iec62056-21',
    importWh: r.importWh,
    exportWh: r.exportWh,
    importByTariffWh: { ...r.importByTariffWh },
    exportByTariffWh: { ...r.exportByTariffWh },
    mbus: [],
    skippedLines: [],
  };
}

/** A data block with its BCC, from lines (tests and simulated optical heads). */
export function formatModeCDataBlock(lines: string[]): Buffer {
  const body = Buffer.from(`${lines.join('\r\n')}\r\n!\r\n\x03`, 'latin1');
  let bcc = 0;
  for (const b of body) bcc ^= b;
  return Buffer.concat([Buffer.from([STX]), body, Buffer.from([bcc])]);
}
