/**
 * One-time enrollment tokens (`tre pki token`), the only module that reads or writes
 * `<pki>/enrollment-tokens/`. A token is 32 random bytes (base64url), shown once to the regulator;
 * the store keeps its SHA-256 (the file name), the meter id and the expiry, and the time it was used:
 *
 *   <pki>/enrollment-tokens/<sha256 hex>.json   {"meterId","expiresAt"}   written once, 0600
 *   <pki>/enrollment-tokens/<sha256 hex>.used   {"usedAt"}                created exclusively (O_EXCL)
 *
 * Using a token creates its `.used` file with O_EXCL: of any number of concurrent uses, in one
 * process or several, exactly one succeeds.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertId } from '@tre/protocol';
import type { TokenRecord } from './enrollment-rules.js';

/** 32 random bytes, base64url (43 characters). */
export function newEnrollmentToken(): string {
  return randomBytes(32).toString('base64url');
}

/** What the store keeps instead of the token. */
export function enrollmentTokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

const isErrno = (err: unknown, code: string) => (err as NodeJS.ErrnoException).code === code;

export class EnrollmentTokens {
  readonly dir: string;

  constructor(pkiDir: string) {
    this.dir = join(pkiDir, 'enrollment-tokens');
  }

  private files(token: string) {
    const hash = enrollmentTokenHash(token);
    return { record: join(this.dir, `${hash}.json`), used: join(this.dir, `${hash}.used`) };
  }

  /** A new token for `meterId`, valid until `expiresAt`. The token is returned, never stored. */
  async create(meterId: string, expiresAt: Date): Promise<string> {
    assertId(meterId, 'meter id');
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const token = newEnrollmentToken();
    const record = { meterId, expiresAt: expiresAt.toISOString() };
    await writeFile(this.files(token).record, `${JSON.stringify(record)}\n`, { mode: 0o600, flag: 'wx' });
    return token;
  }

  /** The record of `token`, or undefined when no such token was made here. */
  async find(token: string): Promise<TokenRecord | undefined> {
    const files = this.files(token);
    const text = await readFile(files.record, 'utf8').catch((err: unknown) => {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    });
    if (text === undefined) return undefined;
    const { meterId, expiresAt } = JSON.parse(text) as TokenRecord;
    const used = await readFile(files.used, 'utf8').catch((err: unknown) => {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    });
    if (used === undefined) return { meterId, expiresAt };
    // A `.used` file cut short by a crash still means used.
    let usedAt = 'at an unrecorded time';
    try {
      usedAt = (JSON.parse(used) as { usedAt?: string }).usedAt ?? usedAt;
    } catch {}
    return { meterId, expiresAt, usedAt };
  }

  /** Marks `token` used at `now`; false when it already was (another request won). */
  async claim(token: string, now: Date): Promise<boolean> {
    try {
      await writeFile(this.files(token).used, `${JSON.stringify({ usedAt: now.toISOString() })}\n`, {
        mode: 0o600,
        flag: 'wx',
      });
      return true;
    } catch (err) {
      if (isErrno(err, 'EEXIST')) return false;
      throw err;
    }
  }

  /** Undoes `claim` when no certificate could be issued after it (the token is not spent). */
  async release(token: string): Promise<void> {
    await unlink(this.files(token).used).catch(() => {});
  }
}
