/**
 * The pure-TypeScript quote verifier against evidence built with a software AK (no TPM here; the
 * swtpm end-to-end tests exercise the same verifier on real quotes). Each check can fail by name.
 */
import {
  createHash,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  X509Certificate,
} from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AttestationPolicy,
  type Evidence,
  encodeQuoteAttest,
  merkleBatch,
  qualifyingData,
  TPM_ALG_SHA256,
  tlsKeyHash,
  verifyAttestation,
} from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const sha = (b: Buffer) => createHash('sha256').update(b).digest();
let dir: string;
let root: X509Certificate;
let treCert: X509Certificate;
let otherTreCert: X509Certificate;
let ak: { privateKey: KeyObject; cert: string };
let rogueAk: { privateKey: KeyObject; cert: string };

const events = [
  { pcr: 23, digest: sha(Buffer.from('bundle')).toString('hex'), description: 'tre-broker bundle' },
  { pcr: 23, digest: sha(Buffer.from('node')).toString('hex'), description: 'node binary' },
];
const pcr23 = events.reduce(
  (acc, e) => sha(Buffer.concat([acc, Buffer.from(e.digest, 'hex')])),
  Buffer.alloc(32),
);
const policy: AttestationPolicy = {
  v: 1,
  policyId: 'p1',
  issuedAt: '2026-11-01T00:00:00Z',
  requiredPcrs: [23],
  pcrValues: { '23': [pcr23.toString('hex')] },
  eventDigests: events.map(({ description, digest }) => ({ description, digest })),
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'verifier-'));
  const { ca } = await CertificateAuthority.init(join(dir, 'pki'), { treId: 'tre1' });
  root = new X509Certificate(await readFile(join(dir, 'pki', 'ca.crt')));
  treCert = new X509Certificate(await readFile(join(dir, 'pki', 'tre.crt')));
  await ca.issueServer('tre1', [], { force: true });
  otherTreCert = new X509Certificate(await readFile(join(dir, 'pki', 'tre.crt')));
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  ak = {
    privateKey: k.privateKey,
    cert: await ca.issueAttestationKeyCertificate(
      k.publicKey.export({ type: 'spki', format: 'der' }),
      'tre1',
    ),
  };
  const rogue = await CertificateAuthority.init(join(dir, 'rogue'), { treId: 'tre1' });
  const r = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  rogueAk = {
    privateKey: r.privateKey,
    cert: await rogue.ca.issueAttestationKeyCertificate(
      r.publicKey.export({ type: 'spki', format: 'der' }),
      'tre1',
    ),
  };
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

function evidenceFor(
  nonces: Buffer[],
  index: number,
  opts: { key?: typeof ak; tls?: X509Certificate; log?: typeof events } = {},
): Evidence {
  const { root: merkleRoot, proofs } = merkleBatch(nonces);
  const keyHash = tlsKeyHash(opts.tls ?? treCert);
  const attest = encodeQuoteAttest({
    qualifiedSigner: Buffer.from('000b', 'hex'),
    extraData: qualifyingData(merkleRoot, keyHash),
    clock: 1n,
    resetCount: 0,
    restartCount: 0,
    safe: true,
    firmwareVersion: 1n,
    pcrSelections: [{ hash: TPM_ALG_SHA256, pcrs: [23] }],
    pcrDigest: sha(pcr23),
  });
  const signer = opts.key ?? ak;
  const proof = proofs[index]!;
  return {
    attest: attest.toString('base64'),
    signature: sign('sha256', attest, { key: signer.privateKey, dsaEncoding: 'der' }).toString('base64'),
    pcrs: [{ index: 23, sha256: pcr23.toString('hex') }],
    eventLog: opts.log ?? events,
    akCertificate: signer.cert,
    tlsKeyHash: keyHash.toString('hex'),
    batch: {
      root: merkleRoot.toString('hex'),
      leafIndex: proof.leafIndex,
      leafCount: proof.leafCount,
      siblings: proof.siblings.map((s) => s.toString('hex')),
    },
  };
}

const verify = (nonce: Buffer, evidence: Evidence, tls = treCert) =>
  verifyAttestation({ nonce, evidence, regulatorRoot: root, treCertificate: tls, policy, now: new Date() });

describe('verifyAttestation', () => {
  it('trusts a good quote for every nonce of a batch', async () => {
    const nonces = Array.from({ length: 7 }, () => randomBytes(32));
    for (let i = 0; i < nonces.length; i++)
      expect(await verify(nonces[i]!, evidenceFor(nonces, i))).toMatchObject({ trusted: true });
  });
  it('names the failing check', async () => {
    const nonce = randomBytes(32);
    expect(await verify(randomBytes(32), evidenceFor([nonce], 0))).toMatchObject({
      trusted: false,
      check: 'nonce',
    });
    expect(await verify(nonce, evidenceFor([nonce], 0, { tls: otherTreCert }))).toMatchObject({
      check: 'tls-binding',
    });
    expect(await verify(nonce, evidenceFor([nonce], 0, { key: rogueAk }))).toMatchObject({
      check: 'ak-certificate',
    });
    const forged = evidenceFor([nonce], 0);
    forged.signature = evidenceFor([nonce], 0, { key: { ...ak, privateKey: rogueAk.privateKey } }).signature;
    expect(await verify(nonce, forged)).toMatchObject({ check: 'signature' });
    const wrongLog = evidenceFor([nonce], 0, { log: [events[0]!] });
    expect(await verify(nonce, wrongLog)).toMatchObject({ check: 'event-log' });
    const tlsCertAsAk = evidenceFor([nonce], 0);
    tlsCertAsAk.akCertificate = treCert.toString();
    expect(await verify(nonce, tlsCertAsAk)).toMatchObject({ check: 'ak-certificate' });
  });
});
