/** The TPM binding (koffi -> tpm2-tss FAPI) against a real software TPM started here. */

import { execFileSync } from 'node:child_process';
import { createHash, verify } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasAttributes, makeCredential, parseQuoteAttest, parseTpmPublic, TPMA_OBJECT } from '@tre/protocol';
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
  it('an AK quote: TPMS_ATTEST carries the qualifying data and verifies with the AK public key', async () => {
    tpm.createAk();
    const qd = tpm.getRandom(32);
    const quoting = tpm.quote([16, 23], qd);
    // The quote runs on a worker thread; the FAPI context is not shared meanwhile.
    expect(() => tpm.pcrRead(16)).toThrow(/busy with Fapi_Quote/);
    const q = await quoting;
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
  it('sealing to two PCRs: a change in either one fails the unseal', () => {
    for (const changed of [16, 23]) {
      tpm.seal('/HS/SRK/two', Buffer.from('tls key'), [16, 23]);
      expect(tpm.unseal('/HS/SRK/two').toString()).toBe('tls key');
      tpm.pcrExtend(changed, Buffer.from('something else'), 'change');
      expect(() => tpm.unseal('/HS/SRK/two')).toThrow(TpmError);
    }
  });
  it('PCR 23 resets at locality 0 (a restarted TRE re-measures from zero); boot PCR 0 does not', () => {
    tpm.pcrExtend(23, Buffer.from('x'), 'x');
    tpm.pcrReset(23);
    expect(tpm.pcrRead(23).equals(Buffer.alloc(32))).toBe(true);
    expect(() => tpm.pcrReset(0)).toThrow(/locality/);
  });

  describe('credential activation (proof that the AK lives in this TPM)', () => {
    const secret = Buffer.from('regulator challenge, 32 bytes..!');
    it('EK and AK publics: a restricted decrypt EK and a restricted, fixed signing AK', () => {
      tpm.createAk();
      const { ekPublic, akPublic } = tpm.enrollmentKeys();
      const ek = parseTpmPublic(ekPublic);
      const ak = parseTpmPublic(akPublic);
      expect(hasAttributes(ek, TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt | TPMA_OBJECT.fixedTPM)).toBe(
        true,
      );
      expect(
        hasAttributes(
          ak,
          TPMA_OBJECT.restricted | TPMA_OBJECT.sign | TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent,
        ),
      ).toBe(true);
    });
    it("recovers the secret MakeCredential wrapped for this EK and the AK's Name", () => {
      const { ekPublic, akPublic } = tpm.enrollmentKeys();
      const c = makeCredential(parseTpmPublic(ekPublic), parseTpmPublic(akPublic).name, secret);
      expect(tpm.activateCredential(c.credentialBlob, c.encryptedSecret).equals(secret)).toBe(true);
      // Handles are flushed: repeated activations do not exhaust the TPM's object slots.
      for (let i = 0; i < 5; i++)
        expect(tpm.activateCredential(c.credentialBlob, c.encryptedSecret)).toHaveLength(32);
    });
    it('a credential bound to another Name (a software key presented as the AK) does not activate', () => {
      const { ekPublic, akPublic } = tpm.enrollmentKeys();
      const forged = Buffer.from(akPublic);
      forged[forged.length - 1]! ^= 1; // another public key, so another Name
      const c = makeCredential(parseTpmPublic(ekPublic), parseTpmPublic(forged).name, secret);
      expect(() => tpm.activateCredential(c.credentialBlob, c.encryptedSecret)).toThrow(TpmError);
    });
    it('cross-check: a credential made by tpm2_makecredential (tpm2-tools) activates to the same secret', () => {
      const { ekPublic, akPublic } = tpm.enrollmentKeys();
      const dir = mkdtempSync(join(tmpdir(), 'mkcred-'));
      writeFileSync(join(dir, 'ek.pub'), ekPublic);
      writeFileSync(join(dir, 'secret'), secret);
      const name = parseTpmPublic(akPublic).name.toString('hex');
      execFileSync('tpm2_makecredential', [
        '-T',
        'none',
        '-u',
        join(dir, 'ek.pub'),
        '-s',
        join(dir, 'secret'),
        '-n',
        name,
        '-o',
        join(dir, 'cred'),
      ]);
      // tpm2-tools' file: magic 0xBADCC0DE, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
      const file = readFileSync(join(dir, 'cred'));
      const blobEnd = 8 + 2 + file.readUInt16BE(8);
      expect(tpm.activateCredential(file.subarray(8, blobEnd), file.subarray(blobEnd)).equals(secret)).toBe(
        true,
      );
    });
  });

  it('an RSA EK (tpm2-tools made it and activates): our MakeCredential for RSA-OAEP seeds', async () => {
    const rsaTpm = await startSwtpm();
    const dir = mkdtempSync(join(tmpdir(), 'rsa-ek-'));
    const tools = (cmd: string, ...args: string[]) =>
      execFileSync(cmd, args, { cwd: dir, env: { ...process.env, TPM2TOOLS_TCTI: rsaTpm.tcti } });
    try {
      tools('tpm2_createek', '-c', 'ek.ctx', '-G', 'rsa', '-u', 'ek.pub');
      tools(
        'tpm2_createak',
        '-C',
        'ek.ctx',
        '-c',
        'ak.ctx',
        '-G',
        'ecc',
        '-g',
        'sha256',
        '-s',
        'ecdsa',
        '-n',
        'ak.name',
      );
      tools('tpm2_flushcontext', '-t'); // no resource manager: free the object slots for the activation
      const ek = parseTpmPublic(readFileSync(join(dir, 'ek.pub')));
      expect(ek.rsa?.bits).toBe(2048);
      const secret = Buffer.from('rsa ek secret, 32 bytes long!!!!');
      const c = makeCredential(ek, readFileSync(join(dir, 'ak.name')), secret);
      writeFileSync(
        join(dir, 'cred'),
        Buffer.concat([Buffer.from('badcc0de00000001', 'hex'), c.credentialBlob, c.encryptedSecret]),
      );
      tools('tpm2_startauthsession', '--policy-session', '-S', 'session.ctx');
      tools('tpm2_policysecret', '-S', 'session.ctx', '-c', 'e');
      tools(
        'tpm2_activatecredential',
        '-c',
        'ak.ctx',
        '-C',
        'ek.ctx',
        '-i',
        'cred',
        '-o',
        'secret',
        '-P',
        'session:session.ctx',
      );
      expect(readFileSync(join(dir, 'secret')).equals(secret)).toBe(true);
    } finally {
      await rsaTpm.stop();
    }
  });
});
