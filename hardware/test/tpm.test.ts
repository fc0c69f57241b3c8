/** The TPM binding (koffi -> tpm2-tss FAPI) against a real software TPM started here. */
import { createHash, verify } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseQuoteAttest } from '@tre/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Swtpm, startSwtpm, Tpm, TpmError } from '../src/tpm/index.js';

let swtpm: Swtpm;
let tpm: Tpm;
beforeAll(async () => {
  swtpm = await startSwtpm();
  tpm = Tpm.open({ tcti: swtpm.tcti, keystoreDir: mkdtempSync(join(tmpdir(), 'fapi-')) });
});
afterAll(async () => {
  tpm?.close();
  await swtpm?.stop();
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

describe('TPM through tpm2-tss FAPI', () => {
  it('random bytes', () => {
    const a = tpm.getRandom(32);
    expect(a).toHaveLength(32);
    expect(a.equals(tpm.getRandom(32))).toBe(false);
  });
  it('PCR extend: new = SHA-256(old || SHA-256(data))', () => {
    const before = tpm.pcrRead(16);
    tpm.pcrExtend(16, Buffer.from('event'), 'test event');
    expect(tpm.pcrRead(16).equals(sha256(Buffer.concat([before, sha256(Buffer.from('event'))])))).toBe(true);
  });
  it('an AK quote: TPMS_ATTEST carries the qualifying data and verifies with the AK public key', () => {
    tpm.createAk();
    const qd = tpm.getRandom(32);
    const q = tpm.quote([16, 23], qd);
    const attest = parseQuoteAttest(q.attest);
    expect(attest.magic).toBe(0xff544347);
    expect(attest.type).toBe(0x8018);
    expect(attest.extraData.equals(qd)).toBe(true);
    expect(verify('sha256', q.attest, { key: tpm.publicKeyPem(), dsaEncoding: 'der' }, q.signature)).toBe(
      true,
    );
    const digest = sha256(Buffer.concat(q.pcrs.map((p) => Buffer.from(p.sha256, 'hex'))));
    expect(attest.pcrDigest.equals(digest)).toBe(true);
  });
  it('sealing to PCR 23: unseals as measured, fails with a TpmError once the PCR changed', () => {
    tpm.pcrExtend(23, Buffer.from('measured code'), 'code');
    tpm.seal('/HS/SRK/secret', Buffer.from('tls private key'), [23]);
    expect(tpm.unseal('/HS/SRK/secret').toString()).toBe('tls private key');
    tpm.pcrExtend(23, Buffer.from('modified code'), 'code');
    let error: unknown;
    try {
      tpm.unseal('/HS/SRK/secret');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(TpmError);
    expect(error).toMatchObject({
      operation: 'Fapi_Unseal',
      code: expect.any(Number),
      text: expect.stringMatching(/.+/),
    });
    expect((error as TpmError).code).not.toBe(0);
  });
});
