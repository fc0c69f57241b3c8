/**
 * The TRE's TLS key, sealed to its measurement: the TPM seals at most 128 bytes, so it seals a
 * random AES-256 key (at `SEALED_TLS_KEY`, bound to the given PCRs), and that key encrypts the PEM
 * with AES-256-GCM into a file (iv 12 bytes || tag 16 bytes || ciphertext). A TRE whose PCRs
 * differ cannot unseal the AES key, so it cannot use its identity.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Tpm } from '@tre/hardware';

export const SEALED_TLS_KEY = '/HS/SRK/tre-tls-key';

/** Seals `pem` to `pcrs` into `file` (mode 0600). */
export function sealTlsKey(tpm: Tpm, pem: string, pcrs: number[], file: string): void {
  const kek = randomBytes(32);
  tpm.seal(SEALED_TLS_KEY, kek, pcrs);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek, iv);
  const encrypted = Buffer.concat([cipher.update(pem, 'utf8'), cipher.final()]);
  writeFileSync(file, Buffer.concat([iv, cipher.getAuthTag(), encrypted]), { mode: 0o600 });
}

/** The PEM sealed in `file`; throws when the TPM refuses to unseal (another measurement) or the file was altered. */
export function unsealTlsKey(tpm: Tpm, file: string): string {
  const kek = tpm.unseal(SEALED_TLS_KEY);
  const blob = readFileSync(file);
  const decipher = createDecipheriv('aes-256-gcm', kek, blob.subarray(0, 12));
  decipher.setAuthTag(blob.subarray(12, 28));
  return Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]).toString('utf8');
}
