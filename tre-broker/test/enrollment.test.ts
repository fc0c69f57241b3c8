/**
 * Zero-touch enrollment: the EST service on a real HTTPS loopback port, with an injected clock.
 * Tokens work once, only for their meter and before their expiry; bad requests are refused with
 * what to do; concurrent uses of one token: exactly one wins; neither the log nor the token store
 * ever holds a token.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import * as x509 from '@peculiar/x509';
import { CertificateAuthority, createLogger } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  judgeToken,
  parseBasicCredential,
  parseDuration,
  type TokenRecord,
} from '../src/pki/enrollment-rules.js';
import { EnrollmentService } from '../src/pki/enrollment-service.js';
import { EnrollmentTokens } from '../src/pki/enrollment-tokens.js';
import { tre } from './support/run-cli.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const P256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

async function csrFor(uri: string, alg: EcKeyGenParams & { hash: string } = P256): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=device',
    keys,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }])],
  });
  return Buffer.from(csr.rawData).toString('base64');
}

const basic = (user: string, password: string) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

interface Answer {
  status: number;
  type: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

describe('enrollment rules', () => {
  const record: TokenRecord = { meterId: 'm-1', expiresAt: '2030-01-01T00:00:00.000Z' };
  const before = new Date('2029-12-31T23:59:59Z');

  it('durations, credentials and token records', () => {
    expect(parseDuration('7d')).toBe(7 * DAY);
    expect(parseDuration('90s')).toBe(90_000);
    for (const bad of ['0s', '7', '1w', '366d', '-1h']) expect(() => parseDuration(bad)).toThrow(/e\.g\. 7d/);
    expect(parseBasicCredential(basic('m-1', 'abc'))).toEqual({ meterId: 'm-1', token: 'abc' });
    expect(parseBasicCredential(undefined)).toMatchObject({ status: 401, code: 'NO_CREDENTIAL' });
    expect(parseBasicCredential('Bearer abc')).toMatchObject({ status: 401, code: 'NO_CREDENTIAL' });
    expect(parseBasicCredential(basic('M/1', 'abc'))).toMatchObject({ reason: /not a meter id/ });
    expect(parseBasicCredential(basic('m-1', ''))).toMatchObject({ reason: /password is empty/ });
    expect(judgeToken(record, 'm-1', before)).toBeUndefined();
    expect(judgeToken(undefined, 'm-1', before)?.code).toBe('UNKNOWN_TOKEN');
    expect(judgeToken(record, 'm-2', before)?.code).toBe('OTHER_METER');
    expect(judgeToken({ ...record, usedAt: '2029-01-01T00:00:00Z' }, 'm-1', before)?.code).toBe('TOKEN_USED');
    expect(judgeToken(record, 'm-1', new Date('2030-01-01T00:00:00Z'))?.code).toBe('TOKEN_EXPIRED');
  });
});

describe('EST enrollment service', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let tokens: EnrollmentTokens;
  let service: EnrollmentService;
  let port: number;
  let caPem: string;
  let now = new Date();
  let log = '';
  const issuedTokens: string[] = [];

  const token = async (meterId: string, lifetimeMs = 7 * DAY): Promise<string> => {
    const t = await tokens.create(meterId, new Date(now.getTime() + lifetimeMs));
    issuedTokens.push(t);
    return t;
  };

  const call = (
    method: string,
    path: string,
    opts: { auth?: string; body?: string; type?: string } = {},
  ): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = { 'Content-Type': opts.type ?? 'application/pkcs10' };
      if (opts.auth) headers.Authorization = opts.auth;
      const req = request(
        { host: '127.0.0.1', port, method, path, ca: caPem, headers, agent: false },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            body += d;
          });
          res.on('end', () =>
            resolve({
              status: res.statusCode!,
              type: res.headers['content-type'] ?? '',
              headers: res.headers,
              body,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(opts.body ?? '');
    });

  const enroll = (auth: string | undefined, body: string) =>
    call('POST', '/.well-known/est/simpleenroll', { auth, body });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'enrollment-'));
    ({ ca } = await CertificateAuthority.init(join(dir, 'pki')));
    caPem = await readFile(ca.paths.caCert, 'utf8');
    tokens = new EnrollmentTokens(ca.dir);
    const destination = new PassThrough();
    destination.on('data', (d) => {
      log += d;
    });
    service = new EnrollmentService({
      ca,
      tokens,
      tls: await ca.issueEnrollmentServer(['127.0.0.1']),
      host: '127.0.0.1',
      port: 0,
      log: createLogger({ level: 'debug', destination }),
      now: () => now,
    });
    ({ port } = await service.start());
  });

  afterAll(async () => {
    await service?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('serves the root CA as a base64 PKCS#7 certs-only', async () => {
    const r = await call('GET', '/.well-known/est/cacerts');
    expect(r.status).toBe(200);
    expect(r.type).toBe('application/pkcs7-mime');
    expect(r.headers['content-transfer-encoding']).toBe('base64');
    const certs = new x509.X509Certificates(Buffer.from(r.body, 'base64'));
    expect(certs.map((c) => c.toString('pem'))).toEqual([ca.certificate.toString('pem')]);
    expect((await call('POST', '/.well-known/est/cacerts')).status).toBe(405);
    expect((await call('GET', '/.well-known/est/simpleenroll')).status).toBe(405);
    expect((await call('GET', '/')).body).toMatch(/simpleenroll/);
  });

  it('enrolls once: the certificate sign-csr would issue; the token is then spent', async () => {
    const t = await token('m-0001');
    const csr = await csrFor('urn:tre:meter:m-0001');
    const r = await enroll(basic('m-0001', t), csr);
    expect(r.status, r.body).toBe(200);
    expect(r.type).toBe('application/pkcs7-mime; smime-type=certs-only');
    const [cert] = new x509.X509Certificates(Buffer.from(r.body, 'base64'));
    // What `tre pki sign-csr --role meter --id m-0001` issues for the same request:
    const bySignCsr = new x509.X509Certificate(
      await ca.signRequest(
        x509.PemConverter.encode(Buffer.from(csr, 'base64'), 'CERTIFICATE REQUEST'),
        'meter',
        'm-0001',
      ),
    );
    const shape = (c: x509.X509Certificate) => ({
      subject: c.subject,
      issuer: c.issuer,
      days: (c.notAfter.getTime() - c.notBefore.getTime()) / DAY,
      publicKey: Buffer.from(c.publicKey.rawData).toString('hex'),
      extensions: c.extensions.map((e) => [e.type, e.critical, Buffer.from(e.value).toString('hex')]),
    });
    expect(shape(cert!)).toEqual(shape(bySignCsr));
    expect(await cert!.verify({ publicKey: ca.certificate.publicKey })).toBe(true);

    const again = await enroll(basic('m-0001', t), await csrFor('urn:tre:meter:m-0001'));
    expect(again.status).toBe(401);
    expect(again.headers['www-authenticate']).toMatch(/^Basic realm=/);
    expect(again.body).toMatch(/already used .*a token works once: ask the regulator for a new one/);
  });

  it('refuses an expired token, a token for another meter, a wrong credential, with what to do', async () => {
    const csr = await csrFor('urn:tre:meter:m-0002');
    const short = await token('m-0002', 60_000);
    const saved = now;
    now = new Date(saved.getTime() + 61_000);
    const expired = await enroll(basic('m-0002', short), csr);
    now = saved;
    expect(expired.status).toBe(401);
    expect(expired.body).toMatch(/expired at .*ask the regulator for a new one/);

    const foreign = await enroll(basic('m-0002', await token('m-0003')), csr);
    expect(foreign.status).toBe(401);
    expect(foreign.body).toMatch(/issued for another meter: use the token made for m-0002/);

    const unknown = await enroll(basic('m-0002', 'not-a-token'), csr);
    expect(unknown.status).toBe(401);
    expect(unknown.body).toMatch(/not known here/);
    for (const auth of [undefined, 'Bearer abc', basic('M 2', 'x')]) {
      const r = await enroll(auth, csr);
      expect(r.status).toBe(401);
      expect(r.body).toMatch(/send HTTP Basic credentials: the meter id as user name/);
    }
    // The unexpired token still works: only issuing a certificate spends one.
    expect((await enroll(basic('m-0002', short), csr)).status).toBe(200);
  });

  it('refuses a request for another meter, another key type, or no request at all (400), token unspent', async () => {
    const t = await token('m-0004');
    const other = await enroll(basic('m-0004', t), await csrFor('urn:tre:meter:m-0005'));
    expect(other.status).toBe(400);
    expect(other.body).toMatch(
      /names urn:tre:meter:m-0005, not urn:tre:meter:m-0004: make the request for the meter the token was issued for/,
    );
    const p384 = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    const key = await enroll(basic('m-0004', t), await csrFor('urn:tre:meter:m-0004', p384));
    expect(key.status).toBe(400);
    expect(key.body).toMatch(/ECDSA P-384: the regulator certifies ECDSA P-256 keys only/);
    for (const body of ['', 'bm90IGEgcmVxdWVzdA==', '%%%']) {
      const r = await enroll(basic('m-0004', t), body);
      expect(r.status).toBe(400);
      expect(r.body).toMatch(/not a base64 PKCS#10 certificate request/);
    }
    const wrongType = await call('POST', '/.well-known/est/simpleenroll', {
      auth: basic('m-0004', t),
      body: await csrFor('urn:tre:meter:m-0004'),
      type: 'text/plain',
    });
    expect(wrongType.status).toBe(415);
    expect((await enroll(basic('m-0004', t), await csrFor('urn:tre:meter:m-0004'))).status).toBe(200);
  });

  it('concurrent uses of one token: exactly one certificate', async () => {
    const t = await token('m-0006');
    const csrs = await Promise.all(Array.from({ length: 12 }, () => csrFor('urn:tre:meter:m-0006')));
    const answers = await Promise.all(csrs.map((csr) => enroll(basic('m-0006', t), csr)));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    const losers = answers.filter((a) => a.status !== 200);
    expect(losers).toHaveLength(11);
    for (const a of losers) {
      expect(a.status).toBe(401);
      expect(a.body).toMatch(/used/);
    }
  });

  it('a curious observer of the log and the PKI directory finds no token', async () => {
    expect(issuedTokens).toHaveLength(5);
    expect(log).toMatch(/enrollment refused/);
    expect(log).toMatch(/TOKEN_USED/);
    const files: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true }))
        e.isDirectory() ? await walk(join(d, e.name)) : files.push(join(d, e.name));
    };
    await walk(ca.dir);
    expect(files.some((f) => f.includes('enrollment-tokens'))).toBe(true);
    for (const t of issuedTokens) expect(files.join('\n')).not.toContain(t);
    const stored = (await Promise.all(files.map((f) => readFile(f)))).map((b) => b.toString('latin1'));
    for (const t of issuedTokens) {
      const forms = [
        t,
        Buffer.from(t, 'base64url').toString('hex'),
        Buffer.from(t, 'base64url').toString('base64'),
      ];
      for (const form of forms) {
        expect(log).not.toContain(form);
        for (const [i, text] of stored.entries()) expect(text, files[i]).not.toContain(form);
      }
    }
    // Nor a meter id at info level.
    expect(log).not.toMatch(/m-000\d/);
  });
});

describe('tre pki token', { timeout: 60_000 }, () => {
  it('prints the token once (stdout, nothing else), keeps its hash; explains bad arguments', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'enrollment-cli-')), 'pki');
    await tre('pki', 'init', '--dir', dir);
    const r = await tre('pki', 'token', '--dir', dir, '--meter', 'm-0001', '--expires', '12h');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^[A-Za-z0-9_-]{43}\n$/);
    expect(r.stderr).toMatch(/single-use enrollment token for meter m-0001, expires .* \(shown once\)/);
    const record = await new EnrollmentTokens(dir).find(r.stdout.trim());
    expect(record?.meterId).toBe('m-0001');
    const lifetime = Date.parse(record!.expiresAt) - Date.now();
    expect(lifetime).toBeGreaterThan(11 * 3_600_000);
    expect(lifetime).toBeLessThanOrEqual(12 * 3_600_000);
    const badExpiry = await tre('pki', 'token', '--dir', dir, '--meter', 'm-0001', '--expires', '2w');
    expect(badExpiry.code).toBe(2);
    expect(badExpiry.stderr).toMatch(/not a duration between 1s and 365d/);
    const badMeter = await tre('pki', 'token', '--dir', dir, '--meter', 'M/1');
    expect(badMeter.code).toBe(1);
    expect(badMeter.stderr).toMatch(/meter id "M\/1" is not valid/);
    await rm(dirname(dir), { recursive: true, force: true });
  });
});
