/**
 * The pure-TypeScript quote verifier against evidence built with a software AK (no TPM here; the
 * swtpm end-to-end tests exercise the same verifier on real quotes). Each check can fail by name:
 * the AK certificate against the regulator's CRL too, and the whitelist names every component
 * that differs.
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
let revokedAk: { privateKey: KeyObject; cert: string };
let ca: CertificateAuthority;
/** The regulator's CRL as it is now (re-read: revocations rewrite it). */
const crl = () => readFile(join(dir, 'pki', 'crl.pem'), 'utf8');

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
  ({ ca } = await CertificateAuthority.initForDevelopment(join(dir, 'pki'), { treId: 'tre1' }));
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
  const k2 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  revokedAk = {
    privateKey: k2.privateKey,
    cert: await ca.issueAttestationKeyCertificate(
      k2.publicKey.export({ type: 'spki', format: 'der' }),
      'tre1',
    ),
  };
  const rogue = await CertificateAuthority.initForDevelopment(join(dir, 'rogue'), { treId: 'tre1' });
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

const replay = (log: typeof events) =>
  log.reduce((acc, e) => sha(Buffer.concat([acc, Buffer.from(e.digest, 'hex')])), Buffer.alloc(32));

/**
 * Evidence for `nonces[index]`: by default the TPM measured `events` and the log says so; `log`
 * changes only the log (it no longer replays to the quote), `measured` what was measured and logged.
 */
function evidenceFor(
  nonces: Buffer[],
  index: number,
  opts: { key?: typeof ak; tls?: X509Certificate; log?: typeof events; measured?: typeof events } = {},
): Evidence {
  const pcr = opts.measured ? replay(opts.measured) : pcr23;
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
    pcrDigest: sha(pcr),
  });
  const signer = opts.key ?? ak;
  const proof = proofs[index]!;
  return {
    attest: attest.toString('base64'),
    signature: sign('sha256', attest, { key: signer.privateKey, dsaEncoding: 'der' }).toString('base64'),
    pcrs: [{ index: 23, sha256: pcr.toString('hex') }],
    eventLog: opts.log ?? opts.measured ?? events,
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

const verify = async (
  nonce: Buffer,
  evidence: Evidence,
  tls = treCert,
  opts: { regulatorCrl?: string; policy?: AttestationPolicy } = {},
) =>
  verifyAttestation({
    nonce,
    evidence,
    regulatorRoot: root,
    regulatorCrl: opts.regulatorCrl ?? (await crl()),
    treCertificate: tls,
    policy: opts.policy ?? policy,
    now: new Date(),
  });

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

  it('refuses an AK certificate the regulator revoked, and a CRL the regulator root did not sign', async () => {
    const nonce = randomBytes(32);
    const evidence = evidenceFor([nonce], 0, { key: revokedAk });
    expect(await verify(nonce, evidence)).toMatchObject({ trusted: true });
    const serial = new X509Certificate(revokedAk.cert).serialNumber.toLowerCase().replace(/^0+/, '');
    expect(await ca.revokeSerial(serial.toUpperCase())).toEqual({ role: 'tre-ak', id: 'tre1' });
    expect(await verify(nonce, evidence)).toEqual({
      trusted: false,
      check: 'ak-certificate',
      reason: `the AK certificate is revoked by the regulator (serial ${serial})`,
    });
    // The other AK of the same TRE is not revoked with it.
    expect(await verify(nonce, evidenceFor([nonce], 0))).toMatchObject({ trusted: true });
    // A CRL from another CA (the same subject name, another key), or one that is not a CRL.
    const rogueCrl = await readFile(join(dir, 'rogue', 'crl.pem'), 'utf8');
    expect(await verify(nonce, evidence, treCert, { regulatorCrl: rogueCrl })).toEqual({
      trusted: false,
      check: 'ak-certificate',
      reason: "the regulator's CRL is not signed by the regulator root",
    });
    expect(await verify(nonce, evidence, treCert, { regulatorCrl: treCert.toString() })).toMatchObject({
      check: 'ak-certificate',
      reason: "the regulator's CRL does not parse",
    });
  });

  it('names every component that differs from the whitelist, not the PCR they change', async () => {
    const ev = (description: string, content = description) => ({
      pcr: 23,
      digest: sha(Buffer.from(content)).toString('hex'),
      description,
    });
    const release = [
      ev('workspace tre-broker'),
      ev('npm aedes@1.2.0 node_modules/aedes'),
      ev('node binary'),
      ev('shared object /usr/lib/x86_64-linux-gnu/libc.so.6'),
      ev('config clockSpeed=1000'),
    ];
    const whitelist: AttestationPolicy = {
      ...policy,
      pcrValues: { '23': [replay(release).toString('hex')] },
      eventDigests: release.map(({ description, digest }) => ({ description, digest })),
    };
    const nonce = randomBytes(32);
    const same = evidenceFor([nonce], 0, { measured: release });
    expect(await verify(nonce, same, treCert, { policy: whitelist })).toMatchObject({ trusted: true });
    const changed = evidenceFor([nonce], 0, {
      measured: [
        ev('workspace tre-broker', 'patched'),
        ev('npm aedes@1.3.0 node_modules/aedes'),
        ev('node binary'),
        ev('shared object /tmp/hook.so'),
        ev('shared object /usr/lib/x86_64-linux-gnu/libc.so.6'),
        ev('config clockSpeed=2000'),
      ],
    });
    expect(await verify(nonce, changed, treCert, { policy: whitelist })).toEqual({
      trusted: false,
      check: 'whitelist',
      reason: [
        'workspace tre-broker differs from the whitelisted release (changed file)',
        'npm aedes@1.3.0 node_modules/aedes is not whitelisted (the regulator whitelists npm aedes@1.2.0 node_modules/aedes)',
        "shared object /tmp/hook.so is not on the regulator's whitelist (an extra component, e.g. a preloaded library)",
        'config clockSpeed=2000 is not whitelisted (the regulator whitelists config clockSpeed=1000)',
      ].join('; '),
    });
    const fewer = evidenceFor([nonce], 0, { measured: release.slice(0, 4) });
    expect(await verify(nonce, fewer, treCert, { policy: whitelist })).toMatchObject({
      check: 'whitelist',
      reason: "config clockSpeed=1000 is missing from the TRE's measurement",
    });
    // With the components all whitelisted, a PCR value off the list is still named.
    const otherValue = { ...whitelist, pcrValues: { '23': ['00'.repeat(32)] } };
    expect(await verify(nonce, same, treCert, { policy: otherValue })).toMatchObject({
      check: 'whitelist',
      reason: "PCR 23 has a value not on the regulator's whitelist",
    });
  });
});
