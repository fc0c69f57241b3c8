/**
 * SML transport protocol v1, as meters send it through an IR head: a file starts with the escape
 * sequence `1B1B1B1B` and `01010101`, carries its messages (a `1B1B1B1B` in them is sent twice),
 * is padded with 0-3 `00` bytes to a multiple of 4 and ends with `1B1B1B1B 1A nn` (nn = the padding)
 * and a CRC-16/X-25 of every byte before it, low byte first. Escape sequences sit at multiples of 4
 * bytes from the start of the file.
 */
import { crc16X25 } from './crc16.js';

const ESC = Buffer.from([0x1b, 0x1b, 0x1b, 0x1b]);
const START = Buffer.from([0x1b, 0x1b, 0x1b, 0x1b, 0x01, 0x01, 0x01, 0x01]);

export type SmlTransportRejection = 'CRC_MISMATCH' | 'TRUNCATED';

export type UnwrappedSmlFile =
  | { ok: true; body: Buffer }
  | { ok: false; reason: SmlTransportRejection; detail: string };

/** The message bytes of one framed SML file (escapes undone, padding removed), CRC checked. */
export function unwrapSmlFile(frame: Uint8Array): UnwrappedSmlFile {
  const f = Buffer.from(frame);
  if (f.length < 16 || !f.subarray(0, 8).equals(START) || f.length % 4 !== 0)
    return { ok: false, reason: 'TRUNCATED', detail: 'no complete SML file' };
  const end = f.length - 8;
  if (!f.subarray(end, end + 4).equals(ESC) || f[end + 4] !== 0x1a)
    return { ok: false, reason: 'TRUNCATED', detail: 'no end escape sequence' };
  const stored = f[f.length - 2]! | (f[f.length - 1]! << 8);
  const computed = crc16X25(f.subarray(0, f.length - 2));
  if (stored !== computed)
    return {
      ok: false,
      reason: 'CRC_MISMATCH',
      detail: `CRC ${hex4(stored)} != ${hex4(computed)}`,
    };
  const padding = f[end + 5]!;
  const parts: Buffer[] = [];
  for (let i = 8; i < end; i += 4) {
    const group = f.subarray(i, i + 4);
    if (group.equals(ESC)) {
      if (!f.subarray(i + 4, i + 8).equals(ESC))
        return { ok: false, reason: 'TRUNCATED', detail: `unexpected escape sequence at ${i}` };
      i += 4; // an escaped 1B1B1B1B in the data
    }
    parts.push(group);
  }
  const body = Buffer.concat(parts);
  if (padding > 3 || body.length < padding || body.subarray(body.length - padding).some((b) => b !== 0))
    return { ok: false, reason: 'TRUNCATED', detail: 'bad padding' };
  return { ok: true, body: body.subarray(0, body.length - padding) };
}

const hex4 = (n: number) => n.toString(16).toUpperCase().padStart(4, '0');

/** An SML file around message bytes: escaping, padding, end sequence and CRC (tests, simulated meters). */
export function wrapSmlFile(body: Uint8Array): Buffer {
  const padding = (4 - (body.length % 4)) % 4;
  const data = Buffer.concat([Buffer.from(body), Buffer.alloc(padding)]);
  const parts: Buffer[] = [START];
  for (let i = 0; i < data.length; i += 4) {
    const group = data.subarray(i, i + 4);
    parts.push(group);
    if (group.equals(ESC)) parts.push(ESC);
  }
  parts.push(ESC, Buffer.from([0x1a, padding]));
  const unsigned = Buffer.concat(parts);
  const crc = crc16X25(unsigned);
  return Buffer.concat([unsigned, Buffer.from([crc & 0xff, crc >> 8])]);
}

/**
 * Finds SML files in a serial byte stream split anywhere. Bytes outside a delivered file are noise and are
 * counted; a file longer than `maxBytes`, broken by an unknown escape sequence or cut short by the
 * next file's start is dropped as truncated (the next start is searched from the byte after the
 * dropped one's, so a file misaligned by lost bytes costs only itself).
 */
export class SmlFramer {
  private buf = Buffer.alloc(0);
  /** Offset in `buf` up to which the current file has been scanned (a multiple of 4), or -1 outside one. */
  private scanned = -1;
  readonly stats = { frames: 0, noiseBytes: 0, truncated: 0 };

  constructor(private readonly maxBytes = 8_192) {}

  /** Feeds a chunk; returns the complete files it finished (start to CRC). */
  push(chunk: Uint8Array): Buffer[] {
    this.buf = Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    for (;;) {
      if (this.scanned < 0 && !this.findStart()) break;
      const result = this.scan();
      if (result === 'more') break;
      if (result !== 'dropped') {
        out.push(result);
        this.stats.frames++;
      }
    }
    return out;
  }

  /** Skips to the next start sequence; false when there is none yet. */
  private findStart(): boolean {
    const at = this.buf.indexOf(START);
    const noise = at < 0 ? Math.max(0, this.buf.length - (START.length - 1)) : at;
    this.stats.noiseBytes += noise;
    this.buf = this.buf.subarray(noise);
    if (at < 0) return false;
    this.scanned = 8;
    return true;
  }

  private drop(): 'dropped' {
    this.stats.truncated++;
    this.buf = this.buf.subarray(1); // the next search starts after this file's first byte
    this.scanned = -1;
    return 'dropped';
  }

  private scan(): Buffer | 'more' | 'dropped' {
    for (let i = this.scanned; i + 8 <= this.buf.length; i = this.scanned) {
      if (i + 8 > this.maxBytes) return this.drop();
      this.scanned += 4;
      if (!this.buf.subarray(i, i + 4).equals(ESC)) continue;
      const after = this.buf.subarray(i + 4, i + 8);
      if (after.equals(ESC)) {
        this.scanned += 4; // an escaped 1B1B1B1B in the data
        continue;
      }
      if (after[0] === 0x1a) {
        const file = Buffer.from(this.buf.subarray(0, i + 8));
        this.buf = this.buf.subarray(i + 8);
        this.scanned = -1;
        return file;
      }
      if (!after.equals(START.subarray(4))) return this.drop();
      this.stats.truncated++; // the next file began before this one ended
      this.buf = this.buf.subarray(i);
      this.scanned = 8;
      return 'dropped';
    }
    // A start sequence out of step with this file: bytes were lost on the line and the next file
    // has begun; this one will never end in step.
    let next = this.buf.indexOf(START, 1);
    while (next > 0 && next % 4 === 0) next = this.buf.indexOf(START, next + 1);
    if (next > 0 || this.buf.length > this.maxBytes) return this.drop();
    return 'more';
  }
}
