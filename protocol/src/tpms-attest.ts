/**
 * Parser of TPMS_ATTEST (TPM 2.0 Library, Part 2, 10.12.12) for quotes: what the TPM signed.
 * Big-endian throughout; sizes are checked so a truncated or padded structure is rejected.
 */
import { TpmParseError, TpmReader, u16be as u16, u32be as u32 } from './tpm-wire.js';

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

export function parseQuoteAttest(bytes: Buffer): QuoteAttest {
  const r = new TpmReader(bytes, 'TPMS_ATTEST');
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
  if (count > 16) throw new TpmParseError(`implausible PCR selection count ${count}`);
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
  r.end();
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
