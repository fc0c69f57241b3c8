/**
 * The TRE's secrets, sealed to its measurement: its TLS private key (born here, at `tre enroll
 * tls`) and the data key its store is encrypted with. The TPM seals at most 128 bytes, so it seals
 * one random AES-256 key (at `SEALED_KEY`, bound to the application PCR and any boot PCRs) that
 * wraps each secret with AES-256-GCM into a file (iv 12 bytes || tag 16 bytes || ciphertext). A TRE
 * whose PCRs differ, or another TPM, cannot unseal it, so it has neither identity nor data.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Tpm } from '@tre/hardware';

export const SEALED_KEY = '/HS/SRK/tre-secrets';

export interface TreSecrets {
  /** The TLS private key, PKCS#8 PEM. */
  tlsKey: string;
  /** 32 bytes: the store's encryption key. */
  dataKey: Buffer;
}

export const sealedFiles = (dataDir: string) => ({
  tlsKey: join(dataDir, 'tpm', 'tls-key.enc'),
  dataKey: join(dataDir, 'tpm', 'data-key.enc'),
});

function wrap(kek: Buffer, secret: Buffer): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', kek, iv);
  const encrypted = Buffer.concat([cipher.update(secret), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), encrypted]);
}

function unwrap(kek: Buffer, blob: Buffer): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', kek, blob.subarray(0, 12));
  decipher.setAuthTag(blob.subarray(12, 28));
  return Buffer.concat([decipher.update(blob.subarray(28)), decipher.final()]);
}

/** Whether this data directory holds sealed secrets (the TRE was enrolled with a TPM). */
export const hasSealedSecrets = (dataDir: string) => existsSync(sealedFiles(dataDir).tlsKey);

/** Seals new secrets to the current values of `pcrs`, replacing any sealed before (files 0600). */
export function sealSecrets(tpm: Tpm, dataDir: string, secrets: TreSecrets, pcrs: number[]): void {
  const kek = randomBytes(32);
  tpm.seal(SEALED_KEY, kek, pcrs);
  const files = sealedFiles(dataDir);
  mkdirSync(join(dataDir, 'tpm'), { recursive: true, mode: 0o700 });
  writeFileSync(files.tlsKey, wrap(kek, Buffer.from(secrets.tlsKey, 'utf8')), { mode: 0o600 });
  writeFileSync(files.dataKey, wrap(kek, secrets.dataKey), { mode: 0o600 });
}

/** The sealed secrets; throws when the TPM refuses to unseal (another measurement or TPM) or a file was altered. */
export function unsealSecrets(tpm: Tpm, dataDir: string): TreSecrets {
  const kek = tpm.unseal(SEALED_KEY);
  const files = sealedFiles(dataDir);
  return {
    tlsKey: unwrap(kek, readFileSync(files.tlsKey)).toString('utf8'),
    dataKey: unwrap(kek, readFileSync(files.dataKey)),
  };
}

/**
 * Re-seals the wrapping key (unsealed under the current measurement) to `expected` PCR values:
 * the secrets' files stay as they are, and only a TPM measuring those values opens them next.
 */
export function resealSecrets(tpm: Tpm, pcrs: number[], expected: Record<number, Buffer>): void {
  const kek = tpm.unseal(SEALED_KEY);
  tpm.seal(SEALED_KEY, kek, pcrs, expected);
}
