/**
 * Parser of TPMS_ATTEST (TPM 2.0 Library, Part 2, 10.12.12) for quotes: what the TPM signed.
 * Big-endian throughout; sizes are checked so a truncated or padded structure is rejected.
 */
export const TPM_GENERATED_VALUE = 0xff544347;
export const TPM_ST_ATTEST_QUOTE = 0x8018;

export const TPM_ALG_SHA256 = 0x000b;

export interface PcrSelection {
  hash: number;
  pcrs: number[];
}

export interface QuoteAttest {
  magic: number;
  type: number;
  qualifiedSigner: Buffer;
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  pcrSelections: PcrSelection[];
  pcrDigest: Buffer;
}

export class AttestParseError extends Error {
  override readonly name = 'AttestParseError';
  readonly code = 'ATTEST_MALFORMED';
}

class Reader {
  private offset = 0;
  constructor(private readonly buf: Buffer) {}
  private need(n: number): void {
    if (this.offset + n > this.buf.length)
      throw new AttestParseError(`TPMS_ATTEST truncated at byte ${this.offset}`);
  }
  u8(): number {
    this.need(1);
    return this.buf.readUInt8(this.offset++);
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.offset);
    this.offset += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.offset);
    this.offset += 8;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return Buffer.from(v);
  }
  sized(): Buffer {
    return this.bytes(this.u16());
  }
  get done(): boolean {
    return this.offset === this.buf.length;
  }
}

export function parseQuoteAttest(bytes: Buffer): QuoteAttest {
  const r = new Reader(bytes);
  const magic = r.u32();
  const type = r.u16();
  const qualifiedSigner = r.sized();
  const extraData = r.sized();
  const clock = r.u64();
  const resetCount = r.u32();
  const restartCount = r.u32();
  const safe = r.u8() === 1;
  const firmwareVersion = r.u64();
  if (type !== TPM_ST_ATTEST_QUOTE) {
    return {
      magic,
      type,
      qualifiedSigner,
      extraData,
      clock,
      resetCount,
      restartCount,
      safe,
      firmwareVersion,
      pcrSelections: [],
      pcrDigest: Buffer.alloc(0),
    };
  }
  const count = r.u32();
  if (count > 16) throw new AttestParseError(`implausible PCR selection count ${count}`);
  const pcrSelections: PcrSelection[] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16();
    const size = r.u8();
    const bitmap = r.bytes(size);
    const pcrs: number[] = [];
    bitmap.forEach((byte, b) => {
      for (let bit = 0; bit < 8; bit++) if (byte & (1 << bit)) pcrs.push(b * 8 + bit);
    });
    pcrSelections.push({ hash, pcrs });
  }
  const pcrDigest = r.sized();
  if (!r.done) throw new AttestParseError('TPMS_ATTEST has trailing bytes');
  return {
    magic,
    type,
    qualifiedSigner,
    extraData,
    clock,
    resetCount,
    restartCount,
    safe,
    firmwareVersion,
    pcrSelections,
    pcrDigest,
  };
}

/** Builds a quote TPMS_ATTEST (for tests and fakes that stand where no TPM runs). */
export function encodeQuoteAttest(
  a: Omit<QuoteAttest, 'magic' | 'type'> & { magic?: number; type?: number },
): Buffer {
  const parts: Buffer[] = [];
  const u16 = (v: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    return b;
  };
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v);
    return b;
  };
  const u64 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    return b;
  };
  parts.push(u32(a.magic ?? TPM_GENERATED_VALUE), u16(a.type ?? TPM_ST_ATTEST_QUOTE));
  parts.push(u16(a.qualifiedSigner.length), a.qualifiedSigner, u16(a.extraData.length), a.extraData);
  parts.push(
    u64(a.clock),
    u32(a.resetCount),
    u32(a.restartCount),
    Buffer.from([a.safe ? 1 : 0]),
    u64(a.firmwareVersion),
  );
  parts.push(u32(a.pcrSelections.length));
  for (const s of a.pcrSelections) {
    const bitmap = Buffer.alloc(3);
    for (const p of s.pcrs) bitmap[p >> 3]! |= 1 << (p & 7);
    parts.push(u16(s.hash), Buffer.from([3]), bitmap);
  }
  parts.push(u16(a.pcrDigest.length), a.pcrDigest);
  return Buffer.concat(parts);
}
