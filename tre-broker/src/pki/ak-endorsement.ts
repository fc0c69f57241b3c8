/**
 * Enrollment of the TRE's attestation key (AK) with the regulator, before any verifier trusts a
 * quote: the regulator certifies only an AK it has proved resident in the TRE's TPM.
 *
 *   TRE        `tre enroll request`        EK and AK public areas (+ EK certificate if the TPM has one)
 *   regulator  `tre pki endorse-ak challenge`  checks both keys' attributes and the EK certificate
 *              chain, wraps a fresh secret with MakeCredential(EK, secret, Name(AK))
 *   TRE        `tre enroll activate`       the TPM unwraps it (ActivateCredential): only a TPM
 *              holding that EK and an object with that AK Name can
 *   regulator  `tre pki endorse-ak certify`   the secret matches -> AK certificate
 *
 * The regulator keeps the pending challenge (a hash of the secret, an expiry) in
 * `<pki>/enrollments/`, so a response answers only the challenge it issued, once.
 */
import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Tpm } from '@tre/hardware';
import {
  assertId,
  hasAttributes,
  makeCredential,
  parseTpmPublic,
  TPM_ALG,
  TPM_ECC_NIST_P256,
  TPMA_OBJECT,
  type TpmPublic,
  tpmPublicKey,
} from '@tre/protocol';
import { z } from 'zod';
import type { CertificateAuthority, Validity } from './certificate-authority.js';

/** The TCG default EK policy: PolicySecret(TPM_RH_ENDORSEMENT) (EK Credential Profile, B.3). */
const TCG_EK_POLICY = '837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa';
const CHALLENGE_TTL_MS = 60 * 60 * 1000;

const hex = z.string().regex(/^([0-9a-f]{2})+$/i, 'hex bytes');
export const AkEnrollmentRequest = z.object({
  treId: z.string(),
  ekPublic: hex,
  akPublic: hex,
  ekCertificate: z.string().nullable(),
});
export type AkEnrollmentRequest = z.infer<typeof AkEnrollmentRequest>;
export const AkChallenge = z.object({
  treId: z.string(),
  akName: hex,
  credentialBlob: hex,
  encryptedSecret: hex,
  expiresAt: z.string(),
});
export type AkChallenge = z.infer<typeof AkChallenge>;
export const AkChallengeResponse = z.object({ treId: z.string(), akName: hex, secret: hex });
export type AkChallengeResponse = z.infer<typeof AkChallengeResponse>;

export type AkEndorsementCode =
  | 'MALFORMED'
  | 'AK_ATTRIBUTES'
  | 'EK_ATTRIBUTES'
  | 'EK_CERTIFICATE'
  | 'EK_UNCERTIFIED'
  | 'NO_CHALLENGE'
  | 'CHALLENGE_EXPIRED'
  | 'WRONG_SECRET';

export class AkEndorsementError extends Error {
  override readonly name = 'AkEndorsementError';
  constructor(
    readonly code: AkEndorsementCode,
    message: string,
  ) {
    super(message);
  }
}

/** Reads an enrollment file (request, challenge or response), naming the file on failure. */
export function readEnrollmentFile<T>(schema: z.ZodType<T>, file: string): T {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new AkEndorsementError('MALFORMED', `${file} is not JSON`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success)
    throw new AkEndorsementError(
      'MALFORMED',
      `${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
    );
  return parsed.data;
}

// --- the TRE's side -------------------------------------------------------------------------

export function enrollmentRequest(tpm: Tpm, treId: string): AkEnrollmentRequest {
  assertId(treId);
  tpm.createAk();
  const { ekPublic, akPublic, ekCertificate } = tpm.enrollmentKeys();
  return { treId, ekPublic: ekPublic.toString('hex'), akPublic: akPublic.toString('hex'), ekCertificate };
}

export function answerChallenge(tpm: Tpm, challenge: AkChallenge): AkChallengeResponse {
  const secret = tpm.activateCredential(
    Buffer.from(challenge.credentialBlob, 'hex'),
    Buffer.from(challenge.encryptedSecret, 'hex'),
  );
  return { treId: challenge.treId, akName: challenge.akName, secret: secret.toString('hex') };
}

// --- the regulator's side -------------------------------------------------------------------

export interface EkTrust {
  /** PEM certificates: TPM manufacturers' roots and intermediates the EK certificate must chain to. */
  ekCaCertificates?: string[];
  /** Accept an EK without a certificate (swtpm; or an EK public key read on site). */
  allowUncertifiedEk?: boolean;
}

function pemCertificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block),
  );
}

/** The EK certificate must certify this EK's key and chain to one of the trusted manufacturer roots. */
function checkEkCertificate(ek: TpmPublic, certificatePem: string, trust: EkTrust): void {
  const [leaf, ...intermediates] = pemCertificates(certificatePem);
  if (!leaf) throw new AkEndorsementError('EK_CERTIFICATE', 'the EK certificate is not a PEM certificate');
  const ekSpki = tpmPublicKey(ek).export({ type: 'spki', format: 'der' });
  if (!Buffer.from(leaf.publicKey.export({ type: 'spki', format: 'der' })).equals(ekSpki))
    throw new AkEndorsementError('EK_CERTIFICATE', 'the EK certificate is for another key than this EK');
  const trusted = (trust.ekCaCertificates ?? []).flatMap(pemCertificates);
  const pool = [...intermediates, ...trusted];
  const anchors = new Set(trusted.map((c) => c.fingerprint256));
  if (anchors.size === 0)
    throw new AkEndorsementError(
      'EK_CERTIFICATE',
      "the TPM has an EK certificate: pass its manufacturer's CA certificates with --ek-ca <pem>",
    );
  const now = Date.now();
  let cert = leaf;
  for (let depth = 0; depth < 6; depth++) {
    if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo))
      throw new AkEndorsementError('EK_CERTIFICATE', `${cert.subject.replace(/\n/g, ', ')} is not valid now`);
    if (anchors.has(cert.fingerprint256)) return;
    const current = cert;
    const issuer = pool.find((c) => current.checkIssued(c) && current.verify(c.publicKey));
    if (!issuer)
      throw new AkEndorsementError(
        'EK_CERTIFICATE',
        `no trusted issuer for ${current.subject.replace(/\n/g, ', ')} (issuer ${current.issuer.replace(/\n/g, ', ')})`,
      );
    cert = issuer;
  }
  throw new AkEndorsementError('EK_CERTIFICATE', 'the EK certificate chain is too long');
}

/** Checks an enrollment request: an EK fit for credential protection, an AK fit to sign quotes. */
export function checkEnrollmentRequest(
  request: AkEnrollmentRequest,
  trust: EkTrust,
): { ek: TpmPublic; ak: TpmPublic } {
  assertId(request.treId);
  let ek: TpmPublic;
  let ak: TpmPublic;
  try {
    ek = parseTpmPublic(Buffer.from(request.ekPublic, 'hex'));
    ak = parseTpmPublic(Buffer.from(request.akPublic, 'hex'));
  } catch (err) {
    throw new AkEndorsementError('MALFORMED', `not a TPM public area: ${(err as Error).message}`);
  }
  const akNeeds =
    TPMA_OBJECT.fixedTPM |
    TPMA_OBJECT.fixedParent |
    TPMA_OBJECT.sensitiveDataOrigin |
    TPMA_OBJECT.restricted |
    TPMA_OBJECT.sign;
  if (!hasAttributes(ak, akNeeds) || hasAttributes(ak, TPMA_OBJECT.decrypt))
    throw new AkEndorsementError(
      'AK_ATTRIBUTES',
      `the AK must be a TPM-generated, non-duplicable, restricted signing key (attributes 0x${ak.attributes.toString(16)})`,
    );
  if (ak.type !== TPM_ALG.ECC || ak.ecc?.curve !== TPM_ECC_NIST_P256 || ak.scheme?.scheme !== TPM_ALG.ECDSA)
    throw new AkEndorsementError('AK_ATTRIBUTES', 'the AK must be an ECDSA NIST P-256 key');
  const ekNeeds =
    TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt;
  if (!hasAttributes(ek, ekNeeds) || ek.authPolicy.toString('hex') !== TCG_EK_POLICY)
    throw new AkEndorsementError(
      'EK_ATTRIBUTES',
      'the EK must be a restricted decryption key under the TCG default EK policy',
    );
  if (request.ekCertificate) checkEkCertificate(ek, request.ekCertificate, trust);
  else if (!trust.allowUncertifiedEk)
    throw new AkEndorsementError(
      'EK_UNCERTIFIED',
      'the TPM has no EK certificate; if you read this EK from the device yourself, pass --allow-uncertified-ek',
    );
  return { ek, ak };
}

const pendingFile = (ca: CertificateAuthority, akName: string) =>
  join(ca.dir, 'enrollments', `${akName}.json`);

/** Step 1 (regulator): a credential only the TRE's TPM can open; remembers its hash until it expires. */
export async function challengeAk(
  ca: CertificateAuthority,
  request: AkEnrollmentRequest,
  trust: EkTrust,
  now = Date.now(),
): Promise<AkChallenge> {
  const { ek, ak } = checkEnrollmentRequest(request, trust);
  const secret = randomBytes(32);
  const credential = makeCredential(ek, ak.name, secret);
  const akName = ak.name.toString('hex');
  const expiresAt = new Date(now + CHALLENGE_TTL_MS).toISOString();
  await mkdir(join(ca.dir, 'enrollments'), { recursive: true, mode: 0o700 });
  await writeFile(
    pendingFile(ca, akName),
    JSON.stringify({
      treId: request.treId,
      ekName: ek.name.toString('hex'),
      secretSha256: createHash('sha256').update(secret).digest('hex'),
      expiresAt,
    }),
    { mode: 0o600 },
  );
  return {
    treId: request.treId,
    akName,
    credentialBlob: credential.credentialBlob.toString('hex'),
    encryptedSecret: credential.encryptedSecret.toString('hex'),
    expiresAt,
  };
}

/** Step 2 (regulator): the TPM answered with the secret -> the AK certificate (PEM). One use per challenge. */
export async function certifyAk(
  ca: CertificateAuthority,
  request: AkEnrollmentRequest,
  response: AkChallengeResponse,
  opts: { validity?: Validity; now?: number } = {},
): Promise<string> {
  const ak = parseTpmPublic(Buffer.from(request.akPublic, 'hex'));
  const akName = ak.name.toString('hex');
  if (response.akName.toLowerCase() !== akName)
    throw new AkEndorsementError(
      'NO_CHALLENGE',
      'the response answers a challenge for another AK than this request',
    );
  let pending: { treId: string; secretSha256: string; expiresAt: string };
  try {
    pending = JSON.parse(await readFile(pendingFile(ca, akName), 'utf8'));
  } catch {
    throw new AkEndorsementError(
      'NO_CHALLENGE',
      'no pending challenge for this AK (already used, or never issued): run `tre pki endorse-ak challenge` again',
    );
  }
  await rm(pendingFile(ca, akName), { force: true });
  if ((opts.now ?? Date.now()) > Date.parse(pending.expiresAt))
    throw new AkEndorsementError(
      'CHALLENGE_EXPIRED',
      `the challenge expired at ${pending.expiresAt}; issue a new one`,
    );
  const got = createHash('sha256').update(Buffer.from(response.secret, 'hex')).digest();
  if (!timingSafeEqual(got, Buffer.from(pending.secretSha256, 'hex')))
    throw new AkEndorsementError(
      'WRONG_SECRET',
      'the TPM did not recover the challenge secret: the AK is not resident in the TPM holding this EK',
    );
  const spki = tpmPublicKey(ak).export({ type: 'spki', format: 'der' });
  return ca.issueAttestationKeyCertificate(spki, pending.treId, opts.validity);
}

/** The whole enrollment in one process (the demo, simulations, tests): the same steps and checks. */
export async function endorseAk(
  tpm: Tpm,
  ca: CertificateAuthority,
  treId: string,
  opts: EkTrust & { validity?: Validity } = {},
): Promise<string> {
  const request = enrollmentRequest(tpm, treId);
  const challenge = await challengeAk(ca, request, opts);
  return certifyAk(ca, request, answerChallenge(tpm, challenge), { validity: opts.validity });
}
