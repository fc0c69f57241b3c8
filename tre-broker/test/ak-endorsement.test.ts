/**
 * Enrollment of the TRE's attestation key against real software TPMs: the regulator certifies an AK
 * only after the TPM holding the EK proved, with ActivateCredential, that it holds that AK.
 */
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm, Tpm, TpmError } from '@tre/hardware';
import { parseTpmPublic, TPMA_OBJECT, tpmPublicKey } from '@tre/protocol';
import {
  type AkEnrollmentRequest,
  answerChallenge,
  CertificateAuthority,
  certifyAk,
  challengeAk,
  enrollmentRequest,
} from '@tre/tre-broker';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tre } from './support/run-cli.js';

const run = promisify(execFile);

let dir: string;
let swtpm: Swtpm;
let other: Swtpm;
let ca: CertificateAuthority;
let tpm: Tpm;
let otherTpm: Tpm;
const uncertified = { allowUncertifiedEk: true };
const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
type CertificateMaker = { keys: CryptoKeyPair; cert: x509.X509Certificate };

/** A TPM manufacturer's CA, as a test stands in for one. */
async function makeCa(name: string): Promise<CertificateMaker> {
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true)],
  });
  return { keys, cert };
}

const ekCryptoKey = (ekPublic: Buffer) =>
  webcrypto.subtle.importKey(
    'spki',
    tpmPublicKey(parseTpmPublic(ekPublic)).export({ type: 'spki', format: 'der' }),
    { name: 'ECDSA', namedCurve: 'P-256' },
    true,
    ['verify'],
  );

const ekCertificate = (issuer: CertificateMaker, publicKey: CryptoKey) =>
  x509.X509CertificateGenerator.create({
    subject: 'CN=EK',
    issuer: issuer.cert.subject,
    publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: alg,
    notAfter: new Date(Date.now() + 86_400_000),
  });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ak-enroll-'));
  [swtpm, other] = await Promise.all([startSwtpm(), startSwtpm()]);
  ({ ca } = await CertificateAuthority.initForDevelopment(join(dir, 'pki')));
});
afterAll(async () => {
  tpm?.close();
  otherTpm?.close();
  await Promise.all([swtpm?.stop(), other?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

describe('tre enroll / tre pki endorse-ak, as an operator and the regulator run them', () => {
  it('request -> challenge -> activate -> certify: an AK certificate for the key in the TPM', async () => {
    const data = join(dir, 'tre-data');
    const files = (f: string) => join(dir, f);
    const steps = [
      [
        'enroll',
        'request',
        '--tpm',
        swtpm.tcti,
        '--data',
        data,
        '--tre-id',
        'tre1',
        '--out',
        files('req.json'),
      ],
      [
        'pki',
        'endorse-ak',
        'challenge',
        '--dir',
        join(dir, 'pki'),
        '--request',
        files('req.json'),
        '--out',
        files('ch.json'),
      ],
    ];
    expect((await tre(...steps[0]!)).code).toBe(0);
    // swtpm has no EK certificate: the regulator must say so explicitly.
    const refused = await tre(...steps[1]!);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/no EK certificate.*--allow-uncertified-ek/);
    expect((await tre(...steps[1]!, '--allow-uncertified-ek')).code).toBe(0);
    const activated = await tre(
      'enroll',
      'activate',
      '--tpm',
      swtpm.tcti,
      '--data',
      data,
      '--challenge',
      files('ch.json'),
      '--out',
      files('resp.json'),
    );
    expect(activated.code).toBe(0);
    const certify = [
      'pki',
      'endorse-ak',
      'certify',
      '--dir',
      join(dir, 'pki'),
      '--request',
      files('req.json'),
      '--response',
      files('resp.json'),
      '--out',
      files('ak.crt'),
    ];
    expect((await tre(...certify)).code).toBe(0);

    const request = JSON.parse(await readFile(files('req.json'), 'utf8')) as AkEnrollmentRequest;
    const cert = new X509Certificate(await readFile(files('ak.crt')));
    expect(cert.publicKey.equals(tpmPublicKey(parseTpmPublic(Buffer.from(request.akPublic, 'hex'))))).toBe(
      true,
    );
    expect(cert.verify(new X509Certificate(await readFile(join(dir, 'pki', 'ca.crt'))).publicKey)).toBe(true);
    // A response answers its challenge once.
    const replay = await tre(...certify);
    expect(replay.code).toBe(1);
    expect(replay.stderr).toMatch(/no pending challenge/);
  });
});

describe('what the regulator refuses', () => {
  beforeAll(() => {
    tpm = Tpm.open({ tcti: swtpm.tcti, keystoreDir: join(dir, 'tpm-a') });
    otherTpm = Tpm.open({ tcti: other.tcti, keystoreDir: join(dir, 'tpm-b') });
  });

  it('a software key presented as the AK: the TPM cannot open the challenge, a guessed answer is refused', async () => {
    const real = enrollmentRequest(tpm, 'tre1');
    const soft = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const akPublic = Buffer.from(real.akPublic, 'hex');
    // Same attributes, the software key's point: x and y are the last two TPM2Bs of 32 bytes.
    Buffer.from(soft.x!, 'base64url').copy(akPublic, akPublic.length - 66);
    Buffer.from(soft.y!, 'base64url').copy(akPublic, akPublic.length - 32);
    const forged = { ...real, akPublic: akPublic.toString('hex') };
    const challenge = await challengeAk(ca, forged, uncertified);
    expect(() => answerChallenge(tpm, challenge)).toThrow(TpmError);
    const guess = { treId: 'tre1', akName: challenge.akName, secret: randomBytes(32).toString('hex') };
    await expect(certifyAk(ca, forged, guess)).rejects.toMatchObject({ code: 'WRONG_SECRET' });
  });

  it("another TPM's AK beside this TPM's EK: neither TPM can open the challenge", async () => {
    const mine = enrollmentRequest(tpm, 'tre1');
    const theirs = enrollmentRequest(otherTpm, 'tre1');
    const mixed = { ...mine, akPublic: theirs.akPublic };
    const challenge = await challengeAk(ca, mixed, uncertified);
    expect(() => answerChallenge(tpm, challenge)).toThrow(TpmError);
    expect(() => answerChallenge(otherTpm, challenge)).toThrow(TpmError);
  });

  it('an AK that is not a restricted signing key', async () => {
    const real = enrollmentRequest(tpm, 'tre1');
    const ak = parseTpmPublic(Buffer.from(real.akPublic, 'hex'));
    const akPublic = Buffer.from(real.akPublic, 'hex');
    akPublic.writeUInt32BE((ak.attributes & ~TPMA_OBJECT.restricted) >>> 0, 6);
    await expect(
      challengeAk(ca, { ...real, akPublic: akPublic.toString('hex') }, uncertified),
    ).rejects.toMatchObject({
      code: 'AK_ATTRIBUTES',
    });
  });

  it('an expired challenge', async () => {
    const request = enrollmentRequest(tpm, 'tre1');
    const challenge = await challengeAk(ca, request, uncertified, Date.now() - 2 * 3_600_000);
    await expect(certifyAk(ca, request, answerChallenge(tpm, challenge))).rejects.toMatchObject({
      code: 'CHALLENGE_EXPIRED',
    });
  });

  it("EK certificates: accepted when they chain to the manufacturer's CA, refused otherwise", async () => {
    const request = enrollmentRequest(tpm, 'tre1');
    const ekKey = await ekCryptoKey(Buffer.from(request.ekPublic, 'hex'));
    const maker = await makeCa('TPM Maker Root');
    const stranger = await makeCa('Somebody Else');
    const ekCert = async (issuer: CertificateMaker, publicKey: CryptoKey) =>
      (await ekCertificate(issuer, publicKey)).toString('pem');
    const trust = { ekCaCertificates: [maker.cert.toString('pem')] };
    const certified = { ...request, ekCertificate: await ekCert(maker, ekKey) };
    const challenge = await challengeAk(ca, certified, trust);
    expect(await certifyAk(ca, certified, answerChallenge(tpm, challenge))).toMatch(/BEGIN CERTIFICATE/);

    await expect(challengeAk(ca, certified, {})).rejects.toThrow(/--ek-ca/);
    const bySomebody = { ...request, ekCertificate: await ekCert(stranger, ekKey) };
    await expect(challengeAk(ca, bySomebody, trust)).rejects.toMatchObject({ code: 'EK_CERTIFICATE' });
    const forAnotherKey = { ...request, ekCertificate: await ekCert(maker, stranger.keys.publicKey) };
    await expect(challengeAk(ca, forAnotherKey, trust)).rejects.toThrow(/another key/);
  });
});

describe('a TPM with a manufacturer EK certificate in NV (index 0x01c0000a)', () => {
  it('tre enroll request carries it; the regulator checks it against --ek-ca instead of --allow-uncertified-ek', async () => {
    const maker = await makeCa('TPM Maker Root');
    const certified = await startSwtpm();
    const data = join(dir, 'certified-tre');
    try {
      // The manufacturer's step: read the EK, certify it, store the DER certificate in NV.
      const t = Tpm.open({ tcti: certified.tcti, keystoreDir: join(data, 'tpm') });
      t.createAk();
      const ekPublic = t.enrollmentKeys().ekPublic;
      t.close();
      const der = Buffer.from((await ekCertificate(maker, await ekCryptoKey(ekPublic))).rawData);
      await writeFile(join(dir, 'ek.der'), der);
      await writeFile(join(dir, 'maker.pem'), maker.cert.toString('pem'));
      const tools = ['-T', `swtpm:host=127.0.0.1,port=${certified.port}`];
      await run('tpm2_nvdefine', [
        ...tools,
        '0x01c0000a',
        '-C',
        'o',
        '-s',
        String(der.length),
        '-a',
        'ownerread|ownerwrite|authread|no_da',
      ]);
      await run('tpm2_nvwrite', [...tools, '0x01c0000a', '-C', 'o', '-i', join(dir, 'ek.der')]);

      const req = join(dir, 'certified-req.json');
      expect(
        (await tre('enroll', 'request', '--tpm', certified.tcti, '--data', data, '--out', req)).code,
      ).toBe(0);
      const request = JSON.parse(await readFile(req, 'utf8')) as AkEnrollmentRequest;
      expect(new X509Certificate(request.ekCertificate!).raw.equals(der)).toBe(true);
      const challenge = [
        'pki',
        'endorse-ak',
        'challenge',
        '--dir',
        join(dir, 'pki'),
        '--request',
        req,
        '--out',
        join(dir, 'certified-ch.json'),
      ];
      const untrusted = await tre(...challenge);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toMatch(/--ek-ca/);
      expect((await tre(...challenge, '--ek-ca', join(dir, 'maker.pem'))).code).toBe(0);
    } finally {
      await certified.stop();
    }
  });
});
