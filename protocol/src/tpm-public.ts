/**
 * TPM2B_PUBLIC (TPM 2.0 Library, Part 2, 12.2.5): the public area of a TPM key as the TPM marshals
 * it, its Name (nameAlg || H(TPMT_PUBLIC)), and its public key as a Node KeyObject. The regulator
 * reads a TRE's endorsement key (EK) and attestation key (AK) from these bytes, so the key it
 * certifies is the key whose Name the TPM proves it holds.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { TpmParseError, TpmReader } from './tpm-wire.js';

export const TPM_ALG = {
  RSA: 0x0001,
  SHA256: 0x000b,
  AES: 0x0006,
  NULL: 0x0010,
  ECDSA: 0x0018,
  ECC: 0x0023,
  CFB: 0x0043,
} as const;
export const TPM_ECC_NIST_P256 = 0x0003;

/** TPMA_OBJECT bits (Part 2, 8.3). */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const;

export interface TpmPublic {
  type: number;
  nameAlg: number;
  attributes: number;
  authPolicy: Buffer;
  /** The object's symmetric algorithm for a storage/EK key: AES keyBits and mode, else null. */
  symmetric: { algorithm: number; keyBits: number; mode: number } | null;
  scheme: { scheme: number; hashAlg: number } | null;
  ecc?: { curve: number; x: Buffer; y: Buffer };
  rsa?: { bits: number; exponent: number; modulus: Buffer };
  /** nameAlg (u16) || H_nameAlg(TPMT_PUBLIC): what TPM commands (MakeCredential, quotes) refer to. */
  name: Buffer;
}

export function hasAttributes(p: TpmPublic, bits: number): boolean {
  return (p.attributes & bits) === bits;
}

/** Parses a marshalled TPM2B_PUBLIC (ECC or RSA keys; SHA-256 names). */
export function parseTpmPublic(tpm2b: Buffer): TpmPublic {
  const outer = new TpmReader(tpm2b, 'TPM2B_PUBLIC');
  const area = outer.sized();
  outer.end();
  const r = new TpmReader(area, 'TPMT_PUBLIC');
  const type = r.u16();
  const nameAlg = r.u16();
  if (nameAlg !== TPM_ALG.SHA256)
    throw new TpmParseError(`name algorithm 0x${nameAlg.toString(16)} is not SHA-256`);
  const attributes = r.u32();
  const authPolicy = r.sized();
  const symAlg = r.u16();
  const symmetric = symAlg === TPM_ALG.NULL ? null : { algorithm: symAlg, keyBits: r.u16(), mode: r.u16() };
  const schemeAlg = r.u16();
  const scheme = schemeAlg === TPM_ALG.NULL ? null : { scheme: schemeAlg, hashAlg: r.u16() };
  let result: Omit<TpmPublic, 'name'>;
  if (type === TPM_ALG.ECC) {
    const curve = r.u16();
    const kdf = r.u16();
    if (kdf !== TPM_ALG.NULL) r.u16();
    const x = r.sized();
    const y = r.sized();
    result = { type, nameAlg, attributes, authPolicy, symmetric, scheme, ecc: { curve, x, y } };
  } else if (type === TPM_ALG.RSA) {
    const bits = r.u16();
    const exponent = r.u32() || 65_537;
    const modulus = r.sized();
    result = { type, nameAlg, attributes, authPolicy, symmetric, scheme, rsa: { bits, exponent, modulus } };
  } else {
    throw new TpmParseError(`key type 0x${type.toString(16)} is neither ECC nor RSA`);
  }
  r.end();
  const name = Buffer.concat([area.subarray(2, 4), createHash('sha256').update(area).digest()]);
  return { ...result, name };
}

/** The key as a Node KeyObject (P-256 or RSA), e.g. to compare with a certificate's key. */
export function tpmPublicKey(p: TpmPublic): KeyObject {
  if (p.ecc) {
    if (p.ecc.curve !== TPM_ECC_NIST_P256 || p.ecc.x.length !== 32 || p.ecc.y.length !== 32)
      throw new TpmParseError('only NIST P-256 ECC keys are supported');
    return createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: p.ecc.x.toString('base64url'), y: p.ecc.y.toString('base64url') },
      format: 'jwk',
    });
  }
  const rsa = p.rsa!;
  const e = Buffer.alloc(4);
  e.writeUInt32BE(rsa.exponent);
  return createPublicKey({
    key: {
      kty: 'RSA',
      n: rsa.modulus.toString('base64url'),
      e: e.subarray(e.findIndex((b) => b !== 0)).toString('base64url'),
    },
    format: 'jwk',
  });
}
