/**
 * The agent's attestation of its TRE: a fresh 32-byte nonce on the agent's own `attest` topic, the
 * evidence back on its `inbox/attestation`, checked by the pure-TypeScript verifier against the
 * regulator root, the regulator's CRL and the regulator-signed whitelist. Used by TreLink before
 * anything is sent, and by every other party's client (`me` is whoever attests: any role).
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  type AttestationPolicy,
  attestationPolicySchema,
  attestationResponseSchema,
  type Clock,
  PROTOCOL_VERSION,
  topics,
  verifyAttestation,
  verifyContent,
} from '@tre/protocol';
import type { TreAttestor, TrustVerdict } from './tre-link.js';

/** Reads the regulator-signed whitelist (JWS) and checks its signature against the root. */
export async function loadAttestationPolicy(
  jws: string,
  regulatorRootPem: string,
): Promise<AttestationPolicy> {
  return verifyContent(
    'attestationPolicy',
    jws.trim(),
    new X509Certificate(regulatorRootPem).publicKey,
    attestationPolicySchema,
  );
}

/** Where the regulator's CRL is by default: `crl.pem` next to the regulator root (as in `tre pki`). */
export function crlBeside(caPath: string): string {
  return join(dirname(caPath), 'crl.pem');
}

/** Reads the regulator's CRL (PEM); a missing or unreadable file says what it is and how to get it. */
export async function readRegulatorCrl(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(
      `cannot read the regulator's CRL at ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): ` +
        "TPM attestation checks the TRE's attestation-key certificate against it; copy the regulator's " +
        '`crl.pem` (next to `ca.crt` in `tre pki`, rewritten by `tre pki revoke`) or name it with --crl <file>',
    );
  }
}

export function tpmQuoteAttestor(opts: {
  regulatorRootPem: string;
  /**
   * The regulator's CRL (PEM, the regulator's `pki/crl.pem`): the AK certificate must not be on it.
   * A function is called on every attestation, so a CRL updated on disk takes effect.
   */
  regulatorCrlPem: string | (() => string | Promise<string>);
  policy: AttestationPolicy;
  clock: Clock;
  timeoutMs?: number;
}): TreAttestor {
  const root = new X509Certificate(opts.regulatorRootPem);
  return async ({ client, treCertificate, me }): Promise<TrustVerdict> => {
    const nonce = randomBytes(32);
    const requestId = `attest-${randomBytes(8).toString('hex')}`;
    const inbox = topics.inbox(me, 'attestation');
    const response = await new Promise<unknown>((resolve, reject) => {
      const timer = opts.clock.setTimeout(() => {
        client.removeListener('message', onMessage);
        reject(new Error('no attestation response'));
      }, opts.timeoutMs ?? 10_000);
      const onMessage = (topic: string, payload: Buffer) => {
        if (topic !== inbox) return;
        let body: { requestId?: unknown };
        try {
          body = JSON.parse(payload.toString('utf8')) as { requestId?: unknown };
        } catch {
          return;
        }
        if (body.requestId !== requestId) return;
        opts.clock.clearTimeout(timer);
        client.removeListener('message', onMessage);
        resolve(body);
      };
      client.on('message', onMessage);
      client.publish(
        topics.attest(me),
        JSON.stringify({ v: PROTOCOL_VERSION, requestId, nonce: nonce.toString('base64url') }),
        { qos: 1 },
      );
    }).catch((err: Error) => err);
    if (response instanceof Error) return { trusted: false, check: 'response', reason: response.message };
    const parsed = attestationResponseSchema.safeParse(response);
    if (!parsed.success)
      return { trusted: false, check: 'response', reason: 'malformed attestation response' };
    if (parsed.data.status !== 'ok' || !parsed.data.evidence) {
      return {
        trusted: false,
        check: 'unavailable',
        reason: parsed.data.message ?? 'the TRE reports attestation unavailable',
      };
    }
    let regulatorCrl: string;
    try {
      regulatorCrl =
        typeof opts.regulatorCrlPem === 'function' ? await opts.regulatorCrlPem() : opts.regulatorCrlPem;
    } catch (err) {
      return {
        trusted: false,
        check: 'ak-certificate',
        reason: `cannot read the regulator's CRL (${(err as Error).message})`,
      };
    }
    const verdict = await verifyAttestation({
      nonce,
      evidence: parsed.data.evidence,
      regulatorRoot: root,
      regulatorCrl,
      treCertificate,
      policy: opts.policy,
      now: new Date(opts.clock.now()),
    });
    return verdict.trusted
      ? { trusted: true }
      : { trusted: false, check: verdict.check, reason: verdict.reason };
  };
}
