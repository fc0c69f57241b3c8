/**
 * Provisioning: the device key is created on the device and never leaves it. Either the agent
 * writes a PKCS#10 request for the regulator (`tre pki sign-csr`) and installs the signed
 * certificate (`provision request|install`), or it enrolls itself on first boot with a one-time
 * token at the regulator's EST service (`provision enroll`, RFC 7030 simpleenroll over HTTPS). Either
 * way the certificate is installed only after checking it matches the key, names this meter, and
 * chains to the regulator root.
 */
import 'reflect-metadata';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { dirname } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import * as x509 from '@peculiar/x509';
import { assertId, formatIdentity } from '@tre/protocol';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export class ProvisioningError extends Error {
  override readonly name = 'ProvisioningError';
  readonly code = 'PROVISIONING';
}

/** The enrollment service refused (a 4xx): trying again cannot help; `meter-agent` exits 3. */
export class EnrollmentRefused extends ProvisioningError {
  readonly exitCode = 3;
}

/** The device key in `keyPath`, made there (P-256, 0600) when absent. */
async function deviceKeys(keyPath: string): Promise<{ keys: CryptoKeyPair; created: boolean }> {
  if (existsSync(keyPath)) {
    const pem = await readFile(keyPath, 'utf8');
    const privateKey = await webcrypto.subtle.importKey(
      'pkcs8',
      x509.PemConverter.decodeFirst(pem),
      ALG,
      true,
      ['sign'],
    );
    const jwk = await webcrypto.subtle.exportKey('jwk', privateKey);
    const publicKey = await webcrypto.subtle.importKey(
      'jwk',
      { ...jwk, d: undefined, key_ops: ['verify'] },
      ALG,
      true,
      ['verify'],
    );
    return { keys: { privateKey, publicKey }, created: false };
  }
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  await writeFile(
    keyPath,
    x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
    { mode: 0o600, flag: 'wx' },
  );
  await chmod(keyPath, 0o600);
  return { keys, created: true };
}

/** The request for urn:tre:meter:<id> (subject CN=meter:<id>, SAN URI). */
function meterRequest(meterId: string, keys: CryptoKeyPair): Promise<x509.Pkcs10CertificateRequest> {
  return x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=meter:${meterId}`,
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: formatIdentity({ role: 'meter', id: meterId }) },
      ]),
    ],
  });
}

/** Creates the key (0600) if absent and writes a CSR for urn:tre:meter:<id>. */
export async function createRequest(meterId: string, keyPath: string, csrPath: string): Promise<void> {
  const { keys } = await deviceKeys(keyPath);
  await writeFile(csrPath, (await meterRequest(meterId, keys)).toString('pem'));
}

/** Why `certPem` is not this device's certificate (signed by the root, for the key, naming the meter). */
async function certificateProblem(
  meterId: string,
  keyPath: string,
  certPem: string,
  caPem: string,
): Promise<string | undefined> {
  const cert = new X509Certificate(certPem);
  const ca = new X509Certificate(caPem);
  if (!cert.verify(ca.publicKey)) return 'the certificate is not signed by the regulator root given';
  if (!cert.checkPrivateKey(createPrivateKey(await readFile(keyPath, 'utf8'))))
    return `the certificate is not for the key in ${keyPath}`;
  const uri = formatIdentity({ role: 'meter', id: meterId });
  if (!cert.subjectAltName?.split(', ').includes(`URI:${uri}`)) return `the certificate does not name ${uri}`;
  return undefined;
}

/** Writes a file whole or not at all (a power cut on first boot leaves no half certificate). */
async function writeWhole(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, data, { mode: 0o644 });
  await rename(tmp, path);
}

/** Checks and installs the certificate the regulator signed. */
export async function installCertificate(
  meterId: string,
  keyPath: string,
  certPem: string,
  caPem: string,
  certPath: string,
): Promise<void> {
  const problem = await certificateProblem(meterId, keyPath, certPem, caPem);
  if (problem) throw new ProvisioningError(problem);
  await writeWhole(certPath, certPem);
}

export const EST_ENROLL_PATH = '/.well-known/est/simpleenroll';

export interface EnrollOptions {
  /** `https://host:port` of the regulator's enrollment service (`tre pki serve-enrollment`). */
  server: string;
  /** The one-time token (its first line); deleted after the certificate is installed. */
  tokenFile: string;
  meterId: string;
  /** The device key, made here (P-256, 0600) when absent. */
  keyPath: string;
  /** Where the certificate goes. */
  certPath: string;
  /** The regulator root: the server's TLS certificate and the issued certificate must chain to it. */
  caPath: string;
  /** Tries in all on connection errors and 5xx (default 10); a 4xx is never retried. */
  attempts?: number;
  /** The wait after the first failed try, doubled after each up to 60 s (default 2,000 ms). */
  retryDelayMs?: number;
  /** Progress lines (default: stdout). They name files, never the token, the key or the meter. */
  progress?: (line: string) => void;
  sleep?: (ms: number) => Promise<void>;
}

/** A failure worth trying again: the network, the server's clock-dependent checks, a 5xx. */
class Transient extends Error {}

/** Errors of reaching the server at all; the TLS verification errors are not among them. */
const CONNECTION_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
]);

/** One simpleenroll POST: the response body on 200. */
function postRequest(url: URL, ca: string, meterId: string, token: string, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        ca,
        agent: false,
        minVersion: 'TLSv1.2',
        timeout: 30_000,
        headers: {
          'Content-Type': 'application/pkcs10',
          'Content-Transfer-Encoding': 'base64',
          Authorization: `Basic ${Buffer.from(`${meterId}:${token}`).toString('base64')}`,
          'Content-Length': Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(new Transient(`the response was cut off (${err.message})`)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8').trim();
          const status = res.statusCode ?? 0;
          if (status === 200) resolve(text);
          else if (status >= 500 || status === 429)
            reject(new Transient(`the enrollment service answered ${status}: ${text.slice(0, 300)}`));
          else
            reject(
              new EnrollmentRefused(
                `the enrollment service refused (${status}): ${text.slice(0, 500) || res.statusMessage}`,
              ),
            );
        });
      },
    );
    req.on('timeout', () =>
      req.destroy(Object.assign(new Error('no answer in 30 s'), { code: 'ETIMEDOUT' })),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      if (CONNECTION_ERRORS.has(code)) reject(new Transient(`cannot reach ${url.host}: ${code}`));
      else if (code === 'CERT_NOT_YET_VALID' || code === 'CERT_HAS_EXPIRED')
        // A Pi has no battery clock: before NTP, the server's certificate looks not yet valid.
        reject(
          new Transient(`the server's certificate is outside its validity (${code}): is the clock set?`),
        );
      else
        reject(
          new ProvisioningError(
            `the server's TLS certificate does not verify against the regulator root given (${code || err.message}): check --server and --ca`,
          ),
        );
    });
    req.end(body);
  });
}

/** The issued certificate (PEM) out of a base64 PKCS#7 certs-only answer. */
function certificateOf(body: string, meterId: string): string {
  let certs: x509.X509Certificates;
  try {
    certs = new x509.X509Certificates(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
  } catch (err) {
    throw new ProvisioningError(
      `the enrollment service's answer is not a base64 PKCS#7 certs-only (${(err as Error).message})`,
    );
  }
  const uri = formatIdentity({ role: 'meter', id: meterId });
  const mine = certs.find((c) =>
    c.extensions.some(
      (e) =>
        e instanceof x509.SubjectAlternativeNameExtension &&
        e.names.toJSON().some((n) => n.type === 'url' && n.value === uri),
    ),
  );
  if (!mine) throw new ProvisioningError(`the enrollment service's answer has no certificate naming ${uri}`);
  return mine.toString('pem');
}

async function removeToken(tokenFile: string): Promise<boolean> {
  return unlink(tokenFile).then(
    () => true,
    () => false,
  );
}

/**
 * Zero-touch enrollment: the device key (made here if absent), a request for this meter, sent with
 * the token to the regulator's EST service over TLS verified against the regulator root; the answer
 * checked like `installCertificate` and written; the token file deleted. Already enrolled (a
 * certificate at `certPath` that passes those checks): nothing is sent.
 */
export async function enrollDevice(o: EnrollOptions): Promise<void> {
  const say = o.progress ?? ((line: string) => console.log(line));
  const sleep = o.sleep ?? ((ms: number) => delay(ms));
  const attempts = o.attempts ?? 10;
  const firstDelay = o.retryDelayMs ?? 2_000;
  assertId(o.meterId, 'meter id');
  const url = new URL(o.server);
  if (url.protocol !== 'https:')
    throw new ProvisioningError(`--server must be https://host:port (got ${url.protocol}//)`);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}${EST_ENROLL_PATH}`;
  const ca = await readFile(o.caPath, 'utf8');

  if (existsSync(o.certPath) && existsSync(o.keyPath)) {
    const installed = await readFile(o.certPath, 'utf8');
    const problem = await certificateProblem(o.meterId, o.keyPath, installed, ca).catch(
      (err: Error) => err.message,
    );
    if (!problem) {
      say(`already enrolled: ${o.certPath} is this device's certificate; nothing sent`);
      if (await removeToken(o.tokenFile)) say(`deleted ${o.tokenFile} (not needed any more)`);
      return;
    }
    say(`${o.certPath} exists but is not this device's (${problem}): enrolling again`);
  }
  const token = (await readFile(o.tokenFile, 'utf8').catch(() => '')).split('\n')[0]!.trim();
  if (!token)
    throw new ProvisioningError(
      `no enrollment token in ${o.tokenFile}: ask the regulator for one (tre pki token --meter <id>) and put it there`,
    );

  await mkdir(dirname(o.keyPath), { recursive: true });
  await mkdir(dirname(o.certPath), { recursive: true });
  const { keys, created } = await deviceKeys(o.keyPath);
  say(created ? `made the device key ${o.keyPath} (0600)` : `using the device key ${o.keyPath}`);
  const body = Buffer.from((await meterRequest(o.meterId, keys)).rawData).toString('base64');

  let answer: string | undefined;
  for (let attempt = 1; answer === undefined; attempt++) {
    say(`enrolling at ${url.origin} (try ${attempt} of ${attempts})`);
    try {
      answer = await postRequest(url, ca, o.meterId, token, body);
    } catch (err) {
      if (!(err instanceof Transient)) throw err;
      if (attempt >= attempts)
        throw new ProvisioningError(`${err.message}; gave up after ${attempts} tries: run this again later`);
      const wait = Math.round(
        Math.min(60_000, firstDelay * 2 ** (attempt - 1)) * (0.8 + 0.4 * Math.random()),
      );
      say(`${err.message}; trying again in ${(wait / 1000).toFixed(1)} s`);
      await sleep(wait);
    }
  }
  const certPem = certificateOf(answer, o.meterId);
  await installCertificate(o.meterId, o.keyPath, certPem, ca, o.certPath);
  say(`enrolled: wrote ${o.certPath}`);
  if (await removeToken(o.tokenFile)) say(`deleted ${o.tokenFile} (a token works once)`);
}
