/**
 * The rules of zero-touch enrollment (EST, RFC 7030), without I/O: the HTTP credential (Basic, user
 * name = meter id, password = the enrollment token), an enrollment token's record, and the device's
 * certificate request. Every refusal carries an HTTP status and a reason that says what to do; no
 * reason quotes the token.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { formatIdentity, ID_PATTERN } from '@tre/protocol';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export type EnrollmentRefusalCode =
  | 'NO_CREDENTIAL'
  | 'UNKNOWN_TOKEN'
  | 'OTHER_METER'
  | 'TOKEN_USED'
  | 'TOKEN_EXPIRED'
  | 'CSR_MALFORMED'
  | 'CSR_SIGNATURE'
  | 'CSR_KEY'
  | 'CSR_OTHER_METER';

export interface EnrollmentRefusal {
  status: 400 | 401;
  code: EnrollmentRefusalCode;
  reason: string;
}

/** What the token store keeps of a token: never the token, only its hash (the record's key). */
export interface TokenRecord {
  meterId: string;
  /** ISO 8601. */
  expiresAt: string;
  /** ISO 8601, once the token was used. */
  usedAt?: string;
}

export interface BasicCredential {
  meterId: string;
  token: string;
}

const ASK_FOR_TOKEN = 'ask the regulator for a new one (tre pki token --meter <id>)';

const refuse = (status: 400 | 401, code: EnrollmentRefusalCode, reason: string): EnrollmentRefusal => ({
  status,
  code,
  reason,
});

/** The `Authorization` header: `Basic base64(<meter id>:<token>)` (RFC 7030 section 3.2.3). */
export function parseBasicCredential(header: string | undefined): BasicCredential | EnrollmentRefusal {
  const how = 'send HTTP Basic credentials: the meter id as user name, the enrollment token as password';
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!m) return refuse(401, 'NO_CREDENTIAL', `no Basic credential: ${how}`);
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  const meterId = colon < 0 ? '' : text.slice(0, colon);
  const token = colon < 0 ? '' : text.slice(colon + 1);
  if (!ID_PATTERN.test(meterId))
    return refuse(401, 'NO_CREDENTIAL', `the user name is not a meter id (1-64 of a-z 0-9 . _ -): ${how}`);
  if (token === '') return refuse(401, 'NO_CREDENTIAL', `the password is empty: ${how}`);
  return { meterId, token };
}

/** Whether the token behind `record` may enroll `meterId` at `now`; undefined when it may. */
export function judgeToken(
  record: TokenRecord | undefined,
  meterId: string,
  now: Date,
): EnrollmentRefusal | undefined {
  if (!record)
    return refuse(
      401,
      'UNKNOWN_TOKEN',
      `the enrollment token is not known here (mistyped?): ${ASK_FOR_TOKEN}`,
    );
  if (record.meterId !== meterId)
    return refuse(
      401,
      'OTHER_METER',
      `the enrollment token was issued for another meter: use the token made for ${meterId}, or ${ASK_FOR_TOKEN}`,
    );
  if (record.usedAt)
    return refuse(
      401,
      'TOKEN_USED',
      `the enrollment token was already used (${record.usedAt}); a token works once: ${ASK_FOR_TOKEN}`,
    );
  if (now.getTime() >= Date.parse(record.expiresAt))
    return refuse(
      401,
      'TOKEN_EXPIRED',
      `the enrollment token expired at ${record.expiresAt}: ${ASK_FOR_TOKEN}`,
    );
  return undefined;
}

/** The refusal when a concurrent request claimed the token first. */
export const tokenJustUsed = (): EnrollmentRefusal =>
  refuse(401, 'TOKEN_USED', `the enrollment token was just used by another request: ${ASK_FOR_TOKEN}`);

/**
 * The simpleenroll body: a PKCS#10 request, base64 DER (PEM accepted too), signed by its own key,
 * an ECDSA P-256 key (what the CA certifies), naming exactly urn:tre:meter:<meterId>.
 */
export async function judgeRequest(
  body: string,
  meterId: string,
): Promise<{ csr: x509.Pkcs10CertificateRequest } | EnrollmentRefusal> {
  const expected = formatIdentity({ role: 'meter', id: meterId });
  let csr: x509.Pkcs10CertificateRequest;
  try {
    const text = body.trim();
    if (!text) throw new Error('the body is empty');
    const der = text.startsWith('-----BEGIN')
      ? x509.PemConverter.decodeFirst(text)
      : Buffer.from(text.replace(/\s+/g, ''), 'base64');
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch (err) {
    return refuse(
      400,
      'CSR_MALFORMED',
      `the body is not a base64 PKCS#10 certificate request (${(err as Error).message}): send the DER request base64-encoded with Content-Type application/pkcs10 (meter-agent provision enroll does)`,
    );
  }
  const alg = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256')
    return refuse(
      400,
      'CSR_KEY',
      `the request's key is ${alg.name ?? 'unknown'} ${alg.namedCurve ?? ''}`.trimEnd() +
        ': the regulator certifies ECDSA P-256 keys only; make the device key on P-256',
    );
  if (!(await csr.verify().catch(() => false)))
    return refuse(
      400,
      'CSR_SIGNATURE',
      'the request is not signed by its own key: make it again with the device key',
    );
  const san = csr.extensions.find(
    (e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension,
  );
  const uris = (san?.names.toJSON() ?? []).filter((n) => n.type === 'url').map((n) => n.value);
  if (uris.length !== 1 || uris[0] !== expected)
    return refuse(
      400,
      'CSR_OTHER_METER',
      `the request names ${uris.length ? uris.join(', ') : 'no urn:tre: identity'}, not ${expected}: make the request for the meter the token was issued for`,
    );
  return { csr };
}

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** The longest token lifetime `tre pki token --expires` accepts. */
export const MAX_TOKEN_LIFETIME_MS = 365 * UNIT_MS.d;

/** `90s`, `30m`, `12h`, `7d` -> milliseconds; between 1 s and 365 days. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,6})([smhd])$/.exec(text.trim());
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : Number.NaN;
  if (!(ms >= UNIT_MS.s && ms <= MAX_TOKEN_LIFETIME_MS))
    throw new TypeError(
      `${JSON.stringify(text)} is not a duration between 1s and 365d: a number and s, m, h or d (e.g. 7d, 12h, 30m)`,
    );
  return ms;
}
