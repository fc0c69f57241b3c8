/**
 * SML (SML 1.04, transport v1) from the specification: TLV encoding, the transport frame with its
 * escapes and CRC-16/X-25, GetList.Res value lists to registers, the byte-stream framer, and the
 * SML reader over @serialport/binding-mock fed frames made by the encoder here.
 */
import { MockBinding } from '@serialport/binding-mock';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import {
  crc16X25,
  decodeSml,
  encodeSml,
  formatSmlFile,
  parseSmlFile,
  SML_UNIT,
  SmlFramer,
  SmlReader,
  type SmlReadout,
  type SmlValue,
  smlSnapshot,
  unwrapSmlFile,
  wrapSmlFile,
} from '../src/serial/index.js';

afterEach(() => MockBinding.reset());

const { W, Wh, V, A } = SML_UNIT;
const entries = [
  { obis: '1-0:1.8.0', unit: Wh, scaler: -1, value: 123_456_789n },
  { obis: '1-0:1.8.1', unit: Wh, scaler: -1, value: 100_000_005n },
  { obis: '1-0:1.8.2', unit: Wh, scaler: -1, value: 23_456_784n },
  { obis: '1-0:2.8.0', unit: Wh, scaler: 3, value: 42, size: 2, unsigned: true },
  { obis: '1-0:16.7.0', unit: W, scaler: -2, value: -10_550, size: 2 },
  { obis: '1-0:36.7.0', unit: W, scaler: 0, value: 300, size: 2 },
  { obis: '1-0:56.7.0', unit: W, scaler: 0, value: -405, size: 2 },
  { obis: '1-0:32.7.0', unit: V, scaler: -1, value: 2_301, size: 2, unsigned: true },
  { obis: '1-0:31.7.0', unit: A, scaler: -2, value: 106, size: 2, unsigned: true },
  { obis: '1-0:0.0.9', value: Buffer.from('0a01545245000000000001', 'hex') },
];

describe('SML TLV', () => {
  const value: fc.Arbitrary<SmlValue> = fc.letrec<{ v: SmlValue }>((tie) => ({
    v: fc.oneof(
      { depthSize: 'small' },
      fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ type: 'octets' as const, bytes })),
      fc.boolean().map((v) => ({ type: 'bool' as const, value: v })),
      fc
        .integer({ min: 1, max: 8 })
        .chain((size) =>
          fc
            .bigInt({ min: -(2n ** BigInt(size * 8 - 1)), max: 2n ** BigInt(size * 8 - 1) - 1n })
            .map((v) => ({ type: 'int' as const, value: v, size })),
        ),
      fc
        .integer({ min: 1, max: 8 })
        .chain((size) =>
          fc
            .bigInt({ min: 0n, max: 2n ** BigInt(size * 8) - 1n })
            .map((v) => ({ type: 'uint' as const, value: v, size })),
        ),
      fc.array(tie('v'), { maxLength: 20 }).map((items) => ({ type: 'list' as const, items })),
    ),
  })).v;

  /** Octet strings as hex, so a Buffer and a Uint8Array of the same bytes compare equal. */
  const plain = (v: SmlValue): unknown =>
    v.type === 'octets' ? Buffer.from(v.bytes).toString('hex') : v.type === 'list' ? v.items.map(plain) : v;

  it('decodes what it encodes, multi-byte TL fields and 1-8 byte integers included (property)', () => {
    fc.assert(
      fc.property(value, (v) => {
        const bytes = encodeSml(v);
        const { value: back, next } = decodeSml(bytes, 0);
        expect(next).toBe(bytes.length);
        expect(plain(back)).toEqual(plain(v));
      }),
    );
  });

  it('reads the specification’s encodings: signed, unsigned, an octet string past 15 bytes', () => {
    expect(decodeSml(Buffer.from('53d6ca', 'hex'), 0).value).toEqual({
      type: 'int',
      value: -10_550n,
      size: 2,
    });
    expect(decodeSml(Buffer.from('560008d20349', 'hex'), 0).value).toMatchObject({ value: 147_981_129n });
    expect(decodeSml(Buffer.from('65000101a2', 'hex'), 0).value).toMatchObject({
      type: 'uint',
      value: 65_954n,
    });
    const long = decodeSml(Buffer.concat([Buffer.from('8302', 'hex'), Buffer.alloc(48, 7)]), 0);
    expect(long).toMatchObject({ value: { type: 'octets' }, next: 50 });
    expect(() => decodeSml(Buffer.from('5900', 'hex'), 0)).toThrow(/past the end/);
  });
});

describe('SML transport and files', () => {
  it('CRC-16/X-25 matches the catalogue check value (CRC of "123456789" = 0x906E)', () => {
    expect(crc16X25(Buffer.from('123456789'))).toBe(0x906e);
  });

  it('reads registers from a file made by the encoder: tariffs, scalers, negative net power, phases', () => {
    const frame = formatSmlFile(entries, { at: Date.UTC(2026, 0, 5, 8, 0, 3) });
    const r = parseSmlFile(frame);
    expect(r).toMatchObject({
      ok: true,
      readout: {
        at: Date.UTC(2026, 0, 5, 8, 0, 3),
        importWh: 12_345_678, // 1.8.0, 12,345,678.9 Wh truncated
        importByTariffWh: { '1': 10_000_000, '2': 2_345_678 },
        exportWh: 42_000,
        powerImportW: 0,
        powerExportW: 105.5,
        phases: {
          L1: { powerImportW: 300, powerExportW: 0, voltageV: 230.1, currentA: 1.06 },
          L2: { powerImportW: 0, powerExportW: 405 },
        },
        skippedLines: [],
      },
    });
    const readout = (r as { readout: SmlReadout }).readout;
    expect(readout.registers).not.toHaveProperty('1-0:0.0.9'); // a meter id is no register
    expect(smlSnapshot(readout)).toMatchObject({ protocol: 'sml', importWh: 12_345_678, mbus: [] });
  });

  it('without 1.8.0 the total is the tariffs added before truncating; without time there is no `at`', () => {
    const r = parseSmlFile(formatSmlFile(entries.filter((e) => e.obis !== '1-0:1.8.0')));
    expect(r).toMatchObject({ ok: true, readout: { importWh: 12_345_678 } });
    expect((r as { readout: SmlReadout }).readout.at).toBeUndefined();
  });

  it('rejects, with a reason, a flipped bit anywhere (property), a bad message CRC, bad energy, no energy', () => {
    const frame = formatSmlFile(entries);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: frame.length * 8 - 1 }), (bit) => {
        const bad = Buffer.from(frame);
        bad[bit >> 3]! ^= 1 << (bit & 7);
        const r = parseSmlFile(bad);
        expect(r.ok).toBe(false);
      }),
    );
    // A value changed and the transport CRC made to fit: the message's own CRC still catches it.
    const body = (unwrapSmlFile(frame) as { body: Buffer }).body;
    const at = body.indexOf(Buffer.from('0000000007 5bcd15'.replace(' ', ''), 'hex'));
    expect(at).toBeGreaterThan(0);
    const changed = Buffer.from(body);
    changed[at + 4]! ^= 1;
    expect(parseSmlFile(wrapSmlFile(changed))).toMatchObject({ ok: false, reason: 'MESSAGE_CRC_MISMATCH' });
    expect(parseSmlFile(formatSmlFile([{ obis: '1-0:1.8.0', unit: W, value: 5 }]))).toMatchObject({
      ok: false,
      reason: 'MALFORMED_VALUE',
      detail: 'malformed 1-0:1.8.0',
    });
    expect(parseSmlFile(formatSmlFile([{ obis: '1-0:1.8.1', unit: Wh, value: -5 }]))).toMatchObject({
      ok: false,
      reason: 'MALFORMED_VALUE',
    });
    expect(parseSmlFile(formatSmlFile([{ obis: '1-0:16.7.0', unit: W, value: 5 }]))).toMatchObject({
      ok: false,
      reason: 'NO_ENERGY_REGISTER',
    });
    expect(parseSmlFile(frame.subarray(0, 100))).toMatchObject({ ok: false, reason: 'TRUNCATED' });
  });

  it('a power entry in the wrong unit is skipped and counted, not fatal', () => {
    const r = parseSmlFile(
      formatSmlFile([...entries.slice(0, 4), { obis: '1-0:16.7.0', unit: Wh, value: 5 }]),
    );
    expect(r).toMatchObject({ ok: true, readout: { skippedLines: ['1-0:16.7.0'] } });
    expect((r as { readout: SmlReadout }).readout.powerImportW).toBeUndefined();
  });

  it('escapes 1B1B1B1B in the data and frames files from any chunking with noise between (property)', () => {
    const esc = Buffer.from('1b1b1b1b', 'hex');
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 4 }),
        fc.array(fc.uint8Array({ maxLength: 30 }), { minLength: 5, maxLength: 5 }),
        fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 30 }),
        (payloads, noise, cuts) => {
          // Octet strings that hold the escape sequence itself, wherever it falls in the frame.
          const files = payloads.map((p, i) =>
            formatSmlFile([
              ...entries.slice(0, 2),
              { obis: '1-0:96.50.1', value: Buffer.concat([p, esc, esc.subarray(0, i)]) },
            ]),
          );
          const clean = noise.map((n) => n.filter((b) => b !== 0x1b));
          const stream = Buffer.concat(
            files.flatMap((f, k) => [Buffer.from(clean[k]!), f]).concat(Buffer.from(clean[4]!)),
          );
          const framer = new SmlFramer();
          const found: Buffer[] = [];
          let pos = 0;
          for (let k = 0; pos < stream.length; k++) {
            const n = cuts[k % cuts.length]!;
            found.push(...framer.push(stream.subarray(pos, pos + n)));
            pos += n;
          }
          expect(found).toEqual(files);
          expect(found.every((f) => parseSmlFile(f).ok)).toBe(true);
          expect(framer.stats.truncated).toBe(0);
        },
      ),
    );
  });

  it('a file that lost bytes on the line costs only itself', () => {
    const [a, b] = [formatSmlFile(entries), formatSmlFile(entries.slice(0, 3))];
    const lossy = Buffer.concat([a.subarray(0, 40), a.subarray(43)]); // 3 bytes lost: out of step
    const framer = new SmlFramer();
    expect(framer.push(Buffer.concat([lossy, b]))).toEqual([b]);
    expect(framer.stats.truncated).toBe(1);
  });
});

describe('SML reader (mock serial binding)', () => {
  it('delivers good files from split reads, counts CRC failures, stamps its clock time', async () => {
    MockBinding.createPort('/dev/ttyIR', { echo: false, record: false });
    const reader = new SmlReader({
      path: '/dev/ttyIR',
      binding: MockBinding as never,
      clock: {
        now: () => 1_000,
        setTimeout: (fn, ms) => setTimeout(fn, ms),
        clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
      },
    });
    const got: [SmlReadout, number][] = [];
    reader.on('readout', (r, at) => got.push([r, at]));
    const opened = new Promise((r) => reader.once('state', r));
    reader.start();
    await opened;
    const good = formatSmlFile(entries);
    const bad = Buffer.from(good);
    bad[60]! ^= 0x40;
    const stream = Buffer.concat([Buffer.from('noise'), good, bad, good.subarray(0, 30), good]);
    const port = (reader.stream as unknown as { port: { emitData(b: Buffer): void } }).port;
    for (let i = 0; i < stream.length; i += 29) port.emitData(stream.subarray(i, i + 29));
    await new Promise((r) => setTimeout(r, 50));
    expect(got.map(([r, at]) => [r.importWh, at])).toEqual([
      [12_345_678, 1_000],
      [12_345_678, 1_000],
    ]);
    expect(reader.stats).toEqual({ telegrams: 2, crcErrors: 1, rejected: 1, skippedLines: 0 });
    await reader.stop();
  });
});
