/**
 * TPM 2.0 wire format (big-endian, sized buffers as u16 length + bytes): a bounds-checked reader
 * and the writers the TPM structures here need. A truncated or padded structure is rejected.
 */
export class TpmParseError extends Error {
  override readonly name = 'TpmParseError';
  readonly code = 'TPM_MALFORMED';
}

export class TpmReader {
  private offset = 0;
  constructor(
    private readonly buf: Buffer,
    private readonly what: string,
  ) {}
  private need(n: number): void {
    if (this.offset + n > this.buf.length)
      throw new TpmParseError(`${this.what} truncated at byte ${this.offset}`);
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
  /** A TPM2B: u16 size, then that many bytes. */
  sized(): Buffer {
    return this.bytes(this.u16());
  }
  /** Throws unless every byte was read. */
  end(): void {
    if (this.offset !== this.buf.length) throw new TpmParseError(`${this.what} has trailing bytes`);
  }
}

export function u16be(v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
}

export function u32be(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

/** A TPM2B: u16 size, then the bytes. */
export function sized(b: Buffer): Buffer {
  return Buffer.concat([u16be(b.length), b]);
}
