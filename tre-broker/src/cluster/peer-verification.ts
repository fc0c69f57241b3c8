/**
 * Attesting another TRE over NATS (issue 21): the hello answer a TRE gives for a verifier's nonce
 * and the checks the verifier makes of it. The shard link (shard-link.ts) attests the other shards
 * with it, and a standby and its primary attest each other with it before the shard key is handed
 * over (shard-handover.ts).
 *
 * The answer `{ shard, certificate, encryptionKey (JWK), keySignature, evidence }`: evidence over
 * the leaf SHA-256(nonce || JWK thumbprint), and a JWS by the TLS key over (shard, thumbprint,
 * nonce) binding the encryption key (see shard-link.ts for why the leaf alone does not). The
 * verifier checks: the certificate chains to the regulator root, is valid, is a TRE certificate
 * naming exactly `urn:tre:tre:<peer>`, is not on the regulator's CRL; `verifyAttestation` over the
 * leaf with that certificate; the key signature.
 */
import { createPublicKey, type KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import {
  AK_CERTIFICATE_EKU,
  type AttestationPolicy,
  attestationResponseSchema,
  type Clock,
  type Evidence,
  formatIdentity,
  verifyAttestation,
} from '@tre/protocol';
import type { JWK } from 'jose';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { z } from 'zod';
import { checkKeyEndorsement, endorseKey, helloLeaf, keyId } from './sealed-envelope.js';

export const publicJwkSchema = z.strictObject({
  kty: z.literal('EC'),
  crv: z.literal('P-256'),
  x: z.string().max(64),
  y: z.string().max(64),
});

export const helloAnswerSchema = z.discriminatedUnion('status', [
  z.strictObject({
    v: z.literal(1),
    status: z.literal('ok'),
    shard: z.string().max(64),
    certificate: z.string().max(16_384),
    encryptionKey: publicJwkSchema,
    keySignature: z.string().max(2_048),
    evidence: attestationResponseSchema.shape.evidence.unwrap(),
  }),
  z.strictObject({
    v: z.literal(1),
    status: z.literal('unavailable'),
    shard: z.string().max(64),
    message: z.string().max(512),
  }),
]);
export type HelloAnswer = z.infer<typeof helloAnswerSchema>;
export type TrustedHello = Extract<HelloAnswer, { status: 'ok' }>;

type AttestationCheck = Extract<Awaited<ReturnType<typeof verifyAttestation>>, { trusted: false }>['check'];

/** Why a peer was not trusted: a check of the hello answer, or one of the quote verifier's. */
export type PeerCheck =
  | 'response'
  | 'certificate'
  | 'revoked'
  | 'encryption-key'
  | 'key-signature'
  | AttestationCheck;

/** What a verifier holds of an attested peer. */
export interface VerifiedPeer {
  tlsKey: KeyObject;
  encryptionKey: KeyObject;
  kid: string;
  attestedAt: number;
}

export interface PeerTrust {
  regulatorRoot: X509Certificate;
  /** The regulator's CRL (PEM), read on every attestation. */
  regulatorCrl: () => string;
  policy: AttestationPolicy;
}

/** This TRE's side of a hello: what it needs to answer one. */
export interface HelloIdentity {
  shard: string;
  /** Its TRE certificate (PEM). */
  certificate: string;
  /** Its TLS key: endorses the encryption key. */
  signingKey: KeyObject;
  evidence: (nonce: Buffer) => Promise<Evidence>;
}

/** The ok answer to a hello with `nonce`, for this run's encryption key (`jwk`, thumbprint `kid`). */
export async function helloAnswerFor(
  me: HelloIdentity,
  own: { jwk: JWK; kid: string },
  nonce: Buffer,
): Promise<TrustedHello> {
  const [evidence, keySignature] = await Promise.all([
    me.evidence(helloLeaf(nonce, own.kid)),
    endorseKey({ shard: me.shard, thumbprint: own.kid, nonce, signingKey: me.signingKey }),
  ]);
  return {
    v: 1,
    status: 'ok',
    shard: me.shard,
    certificate: me.certificate,
    encryptionKey: own.jwk as z.infer<typeof publicJwkSchema>,
    keySignature,
    evidence,
  };
}

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

/** Checks hello answers against the regulator's root, CRL and whitelist (the CRL parsed once per version). */
export class PeerVerifier {
  private crl: { pem: string; serials: Set<string> | string } | undefined;

  constructor(
    private readonly trust: PeerTrust,
    private readonly clock: Clock,
  ) {}

  /** The peer `peer` as attested by `answer` to our `nonce`, or the check it failed. */
  async verify(
    peer: string,
    nonce: Buffer,
    answer: TrustedHello,
  ): Promise<VerifiedPeer | { check: PeerCheck; reason: string }> {
    const { regulatorRoot: root, policy } = this.trust;
    const now = new Date(this.clock.now());
    if (answer.shard !== peer)
      return { check: 'response', reason: `the answer is from shard ${answer.shard}` };
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(answer.certificate);
    } catch {
      return { check: 'certificate', reason: 'the certificate does not parse' };
    }
    if (cert.issuer !== root.subject || !cert.verify(root.publicKey))
      return { check: 'certificate', reason: 'the certificate is not issued by the regulator root' };
    if (now < new Date(cert.validFrom) || now > new Date(cert.validTo))
      return { check: 'certificate', reason: 'the certificate is not valid now' };
    const usages = cert.keyUsage ?? [];
    if (!usages.includes(SERVER_AUTH) || usages.includes(AK_CERTIFICATE_EKU))
      return { check: 'certificate', reason: 'it is not a TRE certificate' };
    const names = (cert.subjectAltName ?? '')
      .split(', ')
      .filter((n) => n.startsWith('URI:urn:tre:'))
      .map((n) => n.slice(4));
    const expected = formatIdentity({ role: 'tre', id: peer });
    if (names.length !== 1 || names[0] !== expected)
      return {
        check: 'certificate',
        reason: `the certificate names ${names.join(', ') || 'no TRE'}, not ${expected}`,
      };
    let crl: string;
    try {
      crl = this.trust.regulatorCrl();
    } catch (err) {
      return { check: 'revoked', reason: `cannot read the regulator's CRL (${(err as Error).message})` };
    }
    const revoked = await this.revokedSerials(crl);
    if (typeof revoked === 'string') return { check: 'revoked', reason: revoked };
    if (revoked.has(cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, '')))
      return { check: 'revoked', reason: 'the regulator revoked its certificate' };
    let encryptionKey: KeyObject;
    try {
      encryptionKey = createPublicKey({ key: answer.encryptionKey, format: 'jwk' });
    } catch {
      return { check: 'encryption-key', reason: 'the encryption key is not a P-256 public key' };
    }
    const kid = await keyId(answer.encryptionKey);
    const verdict = await verifyAttestation({
      nonce: helloLeaf(nonce, kid),
      evidence: answer.evidence,
      regulatorRoot: root,
      regulatorCrl: crl,
      treCertificate: cert,
      policy,
      now,
    });
    if (!verdict.trusted) return { check: verdict.check, reason: verdict.reason };
    const endorsement = await checkKeyEndorsement(answer.keySignature, {
      shard: peer,
      thumbprint: kid,
      nonce,
      tlsKey: cert.publicKey,
    });
    if (endorsement) return { check: 'key-signature', reason: endorsement };
    return { tlsKey: cert.publicKey, encryptionKey, kid, attestedAt: now.getTime() };
  }

  /** The serials on the regulator's CRL, or why it cannot be used; parsed once per CRL. */
  private async revokedSerials(pem: string): Promise<Set<string> | string> {
    if (this.crl?.pem === pem) return this.crl.serials;
    let serials: Set<string> | string;
    try {
      const crl = new x509.X509Crl(pem);
      const root = new x509.X509Certificate(this.trust.regulatorRoot.raw);
      const signed =
        crl.issuer === root.subject &&
        (await crl.verify({ publicKey: root }, webcrypto as unknown as Crypto).catch(() => false));
      serials = signed
        ? new Set(crl.entries.map((e) => e.serialNumber.toLowerCase().replace(/^0+(?=.)/, '')))
        : "the regulator's CRL is not signed by the regulator root";
    } catch {
      serials = "the regulator's CRL does not parse";
    }
    this.crl = { pem, serials };
    return serials;
  }
}
