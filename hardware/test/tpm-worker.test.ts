/**
 * The quote on koffi's worker thread, against a real software TPM: the arguments C reads there
 * must stay what the caller passed until the call ran. koffi hands C the memory of a Buffer or
 * typed array itself and keeps no reference to it; a quote waits for a free libuv thread (file
 * I/O, async crypto, DNS and other koffi calls share four), and a garbage collection meanwhile
 * freed a temporary PCR list under it: the TPM quoted other PCRs (a quote the verifier refuses)
 * or FAPI failed with 0x6000b (TSS2_FAPI_RC_BAD_VALUE, an index FAPI's profile has no bank for).
 */

import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseQuoteAttest } from '@tre/protocol';
import koffi from 'koffi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Swtpm, startSwtpm, Tpm } from '../src/tpm/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

let swtpm: Swtpm;
let tpm: Tpm;
beforeAll(async () => {
  swtpm = await startSwtpm();
  tpm = Tpm.open({ tcti: swtpm.tcti, keystoreDir: mkdtempSync(join(tmpdir(), 'fapi-')) });
  tpm.createAk();
});
afterAll(async () => {
  tpm?.close();
  await swtpm?.stop();
});

const sha256 = (s: string) => createHash('sha256').update(s).digest();
const POOL = Number(process.env.UV_THREADPOOL_SIZE) || 4;

const libc = koffi.load('libc.so.6');
const pipe = libc.func('int pipe(_Out_ int *fds)');
const read = libc.func('long read(int fd, _Out_ uint8_t *buf, size_t count)');
const write = libc.func('long write(int fd, const uint8_t *buf, size_t count)');
const close = libc.func('int close(int fd)');

/**
 * Runs `during` with every libuv thread blocked (each in a read(2) of an empty pipe), so that a
 * quote issued in it waits in libuv's queue until `during` is done. Returns whether it still
 * waited then (the quote had not settled).
 */
async function whilePoolBusy(during: () => Promise<{ pending: Promise<unknown> }>): Promise<boolean> {
  const fds = new Int32Array(2);
  expect(pipe(fds)).toBe(0);
  // Referenced until the reads returned (koffi keeps no reference to them: the bug tested here).
  const buffers = Array.from({ length: POOL }, () => Buffer.alloc(1));
  const blocked = buffers.map(
    (buf) => new Promise<void>((resolve) => read.async(fds[0], buf, 1, () => resolve())),
  );
  let settled = false;
  try {
    const { pending } = await during();
    void pending.finally(() => {
      settled = true;
    });
    await new Promise((r) => setTimeout(r, 5));
    return !settled;
  } finally {
    write(fds[1], Buffer.alloc(POOL), POOL);
    await Promise.all(blocked);
    expect(buffers.every((b) => b.length === 1)).toBe(true);
    close(fds[0]);
    close(fds[1]);
  }
}

/** A full collection, then a turn of the event loop for V8's array buffer sweeper to free. */
async function collect(): Promise<void> {
  gc();
  await new Promise((r) => setTimeout(r, 5));
  gc();
  await new Promise((r) => setTimeout(r, 5));
}

/** The PCRs of the SHA-256 bank a quote's TPMS_ATTEST covers. */
const quotedPcrs = (attest: Buffer) =>
  parseQuoteAttest(attest)
    .pcrSelections.filter((s) => s.hash === 0x000b)
    .flatMap((s) => s.pcrs);

describe('Tpm.quote on the worker thread', () => {
  it('a garbage collection while the quote waits for a worker does not change what it quotes', async () => {
    const rounds = 10;
    const outcomes: string[] = [];
    for (let i = 0; i < rounds; i++) {
      const pcrs = i % 2 ? [23] : [0, 1, 2, 3, 4, 5, 6, 7, 23];
      let quoting!: Promise<string>;
      const interleaved = await whilePoolBusy(async () => {
        // Nothing of the caller's references the arguments after the call: only the Tpm can keep them.
        quoting = tpm.quote([...pcrs], sha256(`nonce ${i}`)).then(
          (q) => {
            const got = quotedPcrs(q.attest);
            const nonce = parseQuoteAttest(q.attest).extraData;
            if (!nonce.equals(sha256(`nonce ${i}`))) return `other nonce ${nonce.toString('hex')}`;
            return got.join(',') === pcrs.join(',') ? 'ok' : `quoted PCRs ${got.join(',')}`;
          },
          (err: Error) => err.message,
        );
        await collect();
        return { pending: quoting };
      });
      expect(interleaved, 'the libuv pool was not busy during the collection').toBe(true);
      outcomes.push(await quoting);
    }
    const failed = outcomes.filter((o) => o !== 'ok');
    console.log(
      `quotes with a collection while waiting for a worker: ${rounds}, wrong or failed: ${failed.length}`,
      failed,
    );
    expect(failed).toEqual([]);
  });

  it('the caller reusing its qualifying-data buffer before the worker ran does not change the nonce', async () => {
    const qd = sha256('the nonce asked for');
    let quoting!: ReturnType<Tpm['quote']>;
    await whilePoolBusy(async () => {
      quoting = tpm.quote([23], qd);
      qd.fill(0); // e.g. a pooled buffer, reused at once
      return { pending: quoting.catch(() => {}) };
    });
    const q = await quoting;
    expect(parseQuoteAttest(q.attest).extraData.equals(sha256('the nonce asked for'))).toBe(true);
  });

  it('refuses PCR indices and qualifying data FAPI would reject, before the TPM runs anything', async () => {
    await expect(tpm.quote([], Buffer.alloc(32))).rejects.toThrow(RangeError);
    await expect(tpm.quote([24], Buffer.alloc(32))).rejects.toThrow(/PCR 24/);
    await expect(tpm.quote([1.5], Buffer.alloc(32))).rejects.toThrow(RangeError);
    await expect(tpm.quote([23], Buffer.alloc(65))).rejects.toThrow(/qualifying data/);
    // and the TPM is free again
    expect(quotedPcrs((await tpm.quote([23], Buffer.alloc(32, 7))).attest)).toEqual([23]);
  });
});
