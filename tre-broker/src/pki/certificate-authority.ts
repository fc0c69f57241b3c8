/**
 * The regulator's PKI: one root CA issues the TRE's server certificate and every party's client
 * certificate (ECDSA P-256). A party's identity is the SAN URI `urn:tre:<role>:<id>`.
 * A TRE's certificate serves TLS (serverAuth) and is also its client certificate towards the
 * shards' NATS cluster (clientAuth); the NATS servers' own certificate (`issueNatsServer`) names no
 * urn:tre: identity, so it never passes for a TRE or a party.
 *
 * Directory layout (`tre pki init --dir D`, the regulator's machine):
 *   D/ca.crt  D/ca.key           regulator root CA
 *   D/tre.crt D/tre.key          development only (`initForDevelopment`): a TRE server
 *                                certificate and key made here; a real TRE makes its key itself
 *                                and sends a request (`tre enroll tls`, then `sign-csr --role tre`)
 *   D/clients/<role>-<id>.crt|key client certificates (clientAuth)
 *   D/index.json                 every certificate issued: role, id, serial, expiry, revocation
 *   D/crl.pem                    CRL signed by the CA, rewritten on every revocation
 *   D/enrollment-tokens/         hashes of one-time enrollment tokens (`enrollment-tokens.ts`)
 * Keys are written 0600; nothing is overwritten without `force`.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import {
  AK_CERTIFICATE_EKU,
  assertId,
  formatIdentity,
  type Identity,
  isPartyRole,
  PARTY_ROLES,
  type PartyRole,
  type SignedType,
  signContent,
} from '@tre/protocol';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

export class PkiError extends Error {
  override readonly name = 'PkiError';
  constructor(
    readonly code: 'EXISTS' | 'NOT_INITIALISED' | 'UNKNOWN_CERTIFICATE' | 'INVALID_ARGUMENT' | 'CSR_INVALID',
    message: string,
  ) {
    super(message);
  }
}

export interface IssuedFiles {
  key: string;
  cert: string;
  ca: string;
}

interface IndexEntry {
  role: string;
  id: string;
  serial: string;
  notAfter: string;
  revokedAt?: string;
}

export interface Validity {
  notBefore?: Date;
  notAfter?: Date;
  days?: number;
}

export const pkiPaths = (dir: string) => ({
  caCert: join(dir, 'ca.crt'),
  caKey: join(dir, 'ca.key'),
  treCert: join(dir, 'tre.crt'),
  treKey: join(dir, 'tre.key'),
  crl: join(dir, 'crl.pem'),
  index: join(dir, 'index.json'),
  client: (role: string, id: string) => ({
    cert: join(dir, 'clients', `${role}-${id}.crt`),
    key: join(dir, 'clients', `${role}-${id}.key`),
  }),
});

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function writeNew(path: string, data: string, mode: number, force: boolean): Promise<void> {
  if (!force && (await exists(path))) {
    throw new PkiError('EXISTS', `${path} already exists; pass --force to overwrite it`);
  }
  await writeFile(path, data, { mode });
  await chmod(path, mode);
}

function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f;
  return bytes.toString('hex');
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function importPrivateKey(pem: string): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pem), ALG, true, ['sign']);
}

function validity(v: Validity | undefined, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const notBefore = v?.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = v?.notAfter ?? new Date(notBefore.getTime() + (v?.days ?? defaultDays) * DAY_MS);
  return { notBefore, notAfter };
}

const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/**
 * A host as a subject alternative name: an IP address, else a DNS name (letters, digits, '-' and
 * '.'). Anything else is refused: a name like `CN=s2,O=TRE` or `urn:tre:...` in a DNS entry could
 * pass for another identity where certificate names are mapped to users (nats-server).
 */
export function hostName(host: string): x509.JsonGeneralName {
  if (isIP(host)) return { type: 'ip', value: host };
  if (host.length <= 253 && DNS_NAME.test(host)) return { type: 'dns', value: host };
  throw new PkiError(
    'INVALID_ARGUMENT',
    `host ${JSON.stringify(host)} is neither an IP address nor a DNS name; give e.g. 10.0.0.5 or tre.example.org`,
  );
}

/** Each host once, after `first`, as subject alternative names. */
function withHosts(first: x509.JsonGeneralName[], hosts: string[]): x509.JsonGeneralName[] {
  const names = [...first];
  for (const host of hosts) {
    const name = hostName(host);
    if (!names.some((n) => n.type === name.type && n.value === name.value)) names.push(name);
  }
  return names;
}

/**
 * The TRE's subject alternative names: DNS localhost, IP 127.0.0.1, URI urn:tre:tre:<id>, and each
 * host (an IP address or a DNS name) once. Its certificate request and its certificate use them.
 */
export function treNames(treId: string, hosts: string[]): x509.JsonGeneralName[] {
  return withHosts(
    [
      { type: 'dns', value: 'localhost' },
      { type: 'ip', value: '127.0.0.1' },
      { type: 'url', value: formatIdentity({ role: 'tre', id: treId }) },
    ],
    hosts,
  );
}

/** The DNS names and IP addresses a certificate request asks for. */
export function requestedHosts(csr: x509.Pkcs10CertificateRequest): string[] {
  const san = csr.extensions.find(
    (e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension,
  );
  return (san?.names.toJSON() ?? []).filter((n) => n.type === 'dns' || n.type === 'ip').map((n) => n.value);
}

export class CertificateAuthority {
  private constructor(
    readonly dir: string,
    readonly certificate: x509.X509Certificate,
    private readonly key: CryptoKey,
  ) {}

  /** The regulator's root CA (and an empty CRL) in `dir`: what `tre pki init` makes. */
  static async init(
    dir: string,
    opts: { force?: boolean; validity?: Validity } = {},
  ): Promise<{ ca: CertificateAuthority }> {
    const paths = pkiPaths(dir);
    await mkdir(join(dir, 'clients'), { recursive: true, mode: 0o700 });
    if (!opts.force && (await exists(paths.caKey))) {
      throw new PkiError('EXISTS', `a CA already exists in ${dir}; pass --force to replace it`);
    }
    const keys = await generateKeys();
    const { notBefore, notAfter } = validity(opts.validity, 3650);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialNumber(),
      name: 'CN=TRE Regulator Root CA, O=TRE regulator',
      notBefore,
      notAfter,
      signingAlgorithm: ALG,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    await writeNew(paths.caKey, await privateKeyPem(keys.privateKey), 0o600, !!opts.force);
    await writeNew(paths.caCert, cert.toString('pem'), 0o644, !!opts.force);
    await writeFile(paths.index, '[]\n', { mode: 0o644 });
    const ca = new CertificateAuthority(dir, cert, keys.privateKey);
    await ca.writeCrl([]);
    return { ca };
  }

  /**
   * Development and tests only: the CA and a TRE server certificate whose key is made here, in
   * plaintext, all in one directory (a TRE with a TPM makes its own key: `tre enroll tls`).
   */
  static async initForDevelopment(
    dir: string,
    opts: { treId?: string; hosts?: string[]; force?: boolean; validity?: Validity } = {},
  ): Promise<{ ca: CertificateAuthority; tre: IssuedFiles }> {
    const { ca } = await CertificateAuthority.init(dir, opts);
    const tre = await ca.issueServer(opts.treId ?? 'tre', opts.hosts ?? [], { force: !!opts.force });
    return { ca, tre };
  }

  static async open(dir: string): Promise<CertificateAuthority> {
    const paths = pkiPaths(dir);
    if (!(await exists(paths.caKey))) {
      throw new PkiError('NOT_INITIALISED', `no CA in ${dir}; run \`tre pki init --dir ${dir}\` first`);
    }
    const cert = new x509.X509Certificate(await readFile(paths.caCert, 'utf8'));
    const key = await importPrivateKey(await readFile(paths.caKey, 'utf8'));
    return new CertificateAuthority(dir, cert, key);
  }

  get paths() {
    return pkiPaths(this.dir);
  }

  /** Development only: a TRE server certificate with its key made here (see `initForDevelopment`). */
  async issueServer(treId: string, hosts: string[], opts: { force?: boolean; validity?: Validity } = {}) {
    const keys = await generateKeys();
    const certPem = await this.serverCertificate(keys.publicKey, treId, hosts, opts.validity);
    const paths = this.paths;
    await writeNew(paths.treKey, await privateKeyPem(keys.privateKey), 0o600, !!opts.force);
    await writeNew(paths.treCert, certPem, 0o644, !!opts.force);
    return { key: paths.treKey, cert: paths.treCert, ca: paths.caCert };
  }

  /**
   * The enrollment service's TLS identity (`tre pki serve-enrollment`): a key made in memory (never
   * written) and a serverAuth certificate naming only the hosts (DNS or IP), recorded as role
   * `enrollment`, id `est`. It names no urn:tre: identity, so it never passes for a TRE.
   */
  async issueEnrollmentServer(hosts: string[], v?: Validity): Promise<{ key: string; cert: string }> {
    if (hosts.length === 0) throw new PkiError('INVALID_ARGUMENT', 'give at least one host name or address');
    const keys = await generateKeys();
    const cert = await this.sign(
      keys.publicKey,
      'CN=TRE enrollment, O=TRE regulator',
      withHosts([], hosts),
      ['server'],
      validity(v, 825),
    );
    await this.record({
      role: 'enrollment',
      id: 'est',
      serial: cert.serialNumber,
      notAfter: cert.notAfter.toISOString(),
    });
    return { key: await privateKeyPem(keys.privateKey), cert: cert.toString('pem') };
  }

  /**
   * The NATS servers' TLS identity between the shards (`cluster/nats-servers.ts`): a key made in
   * memory (the caller writes it, 0600) and a certificate for serverAuth (towards the shards) and
   * clientAuth (the routes between the servers), SAN DNS localhost, IP 127.0.0.1 and each host,
   * recorded as role `nats`, id `id` (default `cluster`). It names no urn:tre: identity and its
   * subject is no TRE's (`O=TRE NATS`), so it never passes for a TRE, a party or a shard's user.
   */
  async issueNatsServer(
    hosts: string[] = [],
    opts: { id?: string; validity?: Validity } = {},
  ): Promise<{ key: string; cert: string }> {
    const id = assertId(opts.id ?? 'cluster');
    const keys = await generateKeys();
    const cert = await this.sign(
      keys.publicKey,
      `CN=NATS ${id}, O=TRE NATS`,
      withHosts(
        [
          { type: 'dns', value: 'localhost' },
          { type: 'ip', value: '127.0.0.1' },
        ],
        hosts,
      ),
      ['server', 'client'],
      validity(opts.validity, 825),
    );
    await this.record({ role: 'nats', id, serial: cert.serialNumber, notAfter: cert.notAfter.toISOString() });
    return { key: await privateKeyPem(keys.privateKey), cert: cert.toString('pem') };
  }

  /**
   * The TRE's certificate: SAN DNS localhost, IP 127.0.0.1, URI urn:tre:tre:<id>, plus hosts; for
   * serverAuth (its MQTT broker) and clientAuth (a shard connecting to the NATS cluster).
   */
  private async serverCertificate(publicKey: CryptoKey, treId: string, hosts: string[], v?: Validity) {
    assertId(treId);
    const cert = await this.sign(
      publicKey,
      `CN=${treId}, O=TRE`,
      treNames(treId, hosts),
      ['server', 'client'],
      validity(v, 825),
    );
    await this.record({
      role: 'tre',
      id: treId,
      serial: cert.serialNumber,
      notAfter: cert.notAfter.toISOString(),
    });
    return cert.toString('pem');
  }

  /** A party's client certificate, key generated here. */
  async issue(
    role: PartyRole,
    id: string,
    opts: { force?: boolean; validity?: Validity } = {},
  ): Promise<IssuedFiles> {
    if (!isPartyRole(role))
      throw new PkiError('INVALID_ARGUMENT', `role must be one of ${PARTY_ROLES.join(', ')}`);
    assertId(id);
    const files = this.paths.client(role, id);
    if (!opts.force && (await exists(files.cert))) {
      throw new PkiError('EXISTS', `${files.cert} already exists; pass --force to reissue`);
    }
    const keys = await generateKeys();
    const certPem = await this.issueFor({ role, id }, keys.publicKey, opts.validity);
    await writeNew(files.key, await privateKeyPem(keys.privateKey), 0o600, !!opts.force);
    await writeNew(files.cert, certPem, 0o644, !!opts.force);
    return { key: files.key, cert: files.cert, ca: this.paths.caCert };
  }

  /**
   * Signs a PKCS#10 request made on the device (the key never leaves it). The identity comes from
   * the regulator's arguments, not from the request's subject.
   */
  async signRequest(
    csrPem: string,
    role: PartyRole | 'tre',
    id: string,
    v?: Validity,
    hosts?: string[],
  ): Promise<string> {
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    if (!(await csr.verify()))
      throw new PkiError('CSR_INVALID', 'the certificate request signature does not verify');
    const publicKey = await csr.publicKey.export(ALG, ['verify']);
    // The TRE's server certificate: the host names the regulator gives, else the request's DNS and
    // IP names; the identity always from the regulator's arguments.
    if (role === 'tre') return this.serverCertificate(publicKey, id, hosts ?? requestedHosts(csr), v);
    return this.issueFor({ role, id }, publicKey, v);
  }

  /**
   * Certificate for a TRE's attestation key (EKU tcg-kp-AIKCertificate, SAN urn:tre:tre:<id>).
   * Call only after the AK has been proven resident in the TRE's TPM (`tre pki endorse-ak`).
   */
  async issueAttestationKeyCertificate(
    akPublicKeySpkiDer: Buffer,
    treId: string,
    v?: Validity,
  ): Promise<string> {
    const publicKey = await webcrypto.subtle.importKey('spki', akPublicKeySpkiDer, ALG, true, ['verify']);
    const period = validity(v, 825);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: `CN=${treId} attestation key, O=TRE`,
      issuer: this.certificate.subject,
      notBefore: period.notBefore,
      notAfter: period.notAfter,
      signingAlgorithm: ALG,
      publicKey,
      signingKey: this.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([AK_CERTIFICATE_EKU], false),
        new x509.SubjectAlternativeNameExtension(
          [{ type: 'url', value: formatIdentity({ role: 'tre', id: treId }) }],
          false,
        ),
        await x509.AuthorityKeyIdentifierExtension.create(this.certificate, false),
      ],
    });
    await this.record({
      role: 'tre-ak',
      id: treId,
      serial: cert.serialNumber,
      notAfter: cert.notAfter.toISOString(),
    });
    return cert.toString('pem');
  }

  /** Signs regulator content (e.g. the attestation whitelist) with the root key, verifiable with ca.crt. */
  async signAsRegulator(type: SignedType, payload: unknown): Promise<string> {
    return signContent(type, payload, this.key);
  }

  private async issueFor(identity: Identity, publicKey: CryptoKey, v?: Validity): Promise<string> {
    const cert = await this.sign(
      publicKey,
      `CN=${identity.role}:${identity.id}`,
      [{ type: 'url', value: formatIdentity(identity) }],
      ['client'],
      validity(v, 825),
    );
    await this.record({
      role: identity.role,
      id: identity.id,
      serial: cert.serialNumber,
      notAfter: cert.notAfter.toISOString(),
    });
    return cert.toString('pem');
  }

  private async sign(
    publicKey: CryptoKey,
    subject: string,
    names: x509.JsonGeneralName[],
    usages: readonly ('server' | 'client')[],
    period: { notBefore: Date; notAfter: Date },
  ): Promise<x509.X509Certificate> {
    return x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject,
      issuer: this.certificate.subject,
      notBefore: period.notBefore,
      notAfter: period.notAfter,
      signingAlgorithm: ALG,
      publicKey,
      signingKey: this.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(
          usages.map((u) =>
            u === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
          ),
          false,
        ),
        new x509.SubjectAlternativeNameExtension(names, false),
        await x509.AuthorityKeyIdentifierExtension.create(this.certificate, false),
      ],
    });
  }

  /** Revokes every live certificate of (role, id) and rewrites the CRL. Returns the serials revoked. */
  async revoke(role: string, id: string): Promise<string[]> {
    return this.updateIndex(async (index) => {
      const now = new Date().toISOString();
      const hits = index.filter((e) => e.role === role && e.id === id && !e.revokedAt);
      if (hits.length === 0) {
        throw new PkiError(
          'UNKNOWN_CERTIFICATE',
          `no unrevoked certificate for ${role} ${id} in ${this.dir}`,
        );
      }
      for (const e of hits) e.revokedAt = now;
      await this.writeCrl(index.filter((e) => e.revokedAt));
      return hits.map((e) => e.serial);
    });
  }

  private async writeCrl(revoked: IndexEntry[]): Promise<void> {
    const crl = await x509.X509CrlGenerator.create({
      issuer: this.certificate.subject,
      thisUpdate: new Date(),
      nextUpdate: new Date(Date.now() + 30 * DAY_MS),
      signingAlgorithm: ALG,
      signingKey: this.key,
      entries: revoked.map((e) => ({ serialNumber: e.serial, revocationDate: new Date(e.revokedAt!) })),
      extensions: [await x509.AuthorityKeyIdentifierExtension.create(this.certificate, false)],
    });
    const tmp = `${this.paths.crl}.tmp`;
    // OpenSSL (and so Node's TLS) wants the 'X509 CRL' PEM label.
    await writeFile(tmp, x509.PemConverter.encode(crl.rawData, 'X509 CRL'));
    await rename(tmp, this.paths.crl);
  }

  private async readIndex(): Promise<IndexEntry[]> {
    return JSON.parse(await readFile(this.paths.index, 'utf8').catch(() => '[]')) as IndexEntry[];
  }

  private async record(entry: IndexEntry): Promise<void> {
    await this.updateIndex(async (index) => {
      index.push(entry);
    });
  }

  private indexUpdates: Promise<unknown> = Promise.resolve();

  /**
   * Read-modify-write of index.json, one at a time (concurrent issues would otherwise lose entries
   * or interleave their writes), replaced atomically (a crash never leaves half a file).
   */
  private updateIndex<T>(change: (index: IndexEntry[]) => Promise<T>): Promise<T> {
    const run = this.indexUpdates.then(async () => {
      const index = await this.readIndex();
      const result = await change(index);
      const tmp = `${this.paths.index}.tmp`;
      await writeFile(tmp, `${JSON.stringify(index, null, 2)}\n`);
      await rename(tmp, this.paths.index);
      return result;
    });
    this.indexUpdates = run.catch(() => {});
    return run;
  }

  /**
   * Revokes one certificate by its serial (hex, any case, leading zeros optional), e.g. a TRE's
   * attestation-key certificate (role `tre-ak`), and rewrites the CRL. Revoking a revoked
   * certificate again changes nothing. Returns whose certificate it was.
   */
  async revokeSerial(serial: string): Promise<{ role: string; id: string }> {
    const norm = (s: string) => s.toLowerCase().replace(/^0+(?=.)/, '');
    return this.updateIndex(async (index) => {
      const hit = index.find((e) => norm(e.serial) === norm(serial));
      if (!hit)
        throw new PkiError('UNKNOWN_CERTIFICATE', `no certificate with serial ${serial} in ${this.dir}`);
      if (!hit.revokedAt) {
        hit.revokedAt = new Date().toISOString();
        await this.writeCrl(index.filter((e) => e.revokedAt));
      }
      return { role: hit.role, id: hit.id };
    });
  }
}
