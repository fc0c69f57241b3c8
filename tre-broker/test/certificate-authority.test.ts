/**
 * The regulator CA: its record of what it issued survives concurrent use; it issues party
 * certificates only for party roles; key usages and names of TRE, party and NATS certificates.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PARTY_ROLES, type PartyRole } from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { describe, expect, it } from 'vitest';
import { PkiError } from '../src/pki/certificate-authority.js';
import { connectWith, startTreFixture } from './support/tre-fixture.js';

describe('certificate authority index', () => {
  it('concurrent issues and a revocation: every certificate recorded once, index.json stays valid JSON', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'ca-index-')), 'pki');
    const { ca } = await CertificateAuthority.initForDevelopment(dir);
    await Promise.all(Array.from({ length: 40 }, (_, i) => ca.issue('meter', `m${i}`)));
    const [revoked] = await Promise.all([ca.revoke('meter', 'm7'), ca.issue('dno', 'd1')]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
      role: string;
      id: string;
      serial: string;
      revokedAt?: string;
    }[];
    const meters = index.filter((e) => e.role === 'meter').map((e) => e.id);
    expect(new Set(meters).size).toBe(40);
    expect(meters).toHaveLength(40);
    expect(index.some((e) => e.role === 'dno' && e.id === 'd1')).toBe(true);
    expect(index.filter((e) => e.revokedAt).map((e) => e.serial)).toEqual(revoked);
  });
});

describe('certificate authority roles', () => {
  it('issues certificates only for party roles, and says which they are', async () => {
    const { ca } = await CertificateAuthority.initForDevelopment(
      join(await mkdtemp(join(tmpdir(), 'ca-roles-')), 'pki'),
    );
    await expect(ca.issue('tre' as PartyRole, 'x')).rejects.toThrow(
      `role must be one of ${PARTY_ROLES.join(', ')}`,
    );
    await expect(ca.issue('admin' as PartyRole, 'x')).rejects.toThrow(/meter, dno, supplier, dsm, regulator/);
  });
});

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

describe('certificate authority key usages', () => {
  it('a TRE certificate serves TLS and is a client certificate too (NATS); a party one is client only', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'ca-eku-')), 'pki');
    const { ca, tre } = await CertificateAuthority.initForDevelopment(dir, { treId: 's1' });
    const treCert = new X509Certificate(await readFile(tre.cert));
    expect(treCert.keyUsage).toEqual([SERVER_AUTH, CLIENT_AUTH]);
    expect(treCert.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, URI:urn:tre:tre:s1');
    const meter = new X509Certificate(await readFile((await ca.issue('meter', 'm1')).cert));
    expect(meter.keyUsage).toEqual([CLIENT_AUTH]);
  });

  it("the NATS servers' certificate: serverAuth and clientAuth, loopback and the hosts, no urn:tre: identity", async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'ca-nats-')), 'pki');
    const { ca } = await CertificateAuthority.init(dir);
    const issued = await ca.issueNatsServer(['nats.example.org', '10.0.0.5', 'localhost']);
    const cert = new X509Certificate(issued.cert);
    expect(cert.keyUsage).toEqual([SERVER_AUTH, CLIENT_AUTH]);
    expect(cert.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1, DNS:nats.example.org, IP Address:10.0.0.5',
    );
    expect(cert.subject).not.toMatch(/^O=TRE$/m);
    const root = new X509Certificate(await readFile(ca.paths.caCert));
    expect(cert.checkIssued(root) && cert.verify(root.publicKey)).toBe(true);
    expect(issued.key).toMatch(/BEGIN PRIVATE KEY/);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
      role: string;
      id: string;
    }[];
    expect(index).toContainEqual(expect.objectContaining({ role: 'nats', id: 'cluster' }));
  });

  it('refuses a host that is neither an IP address nor a DNS name (it could pass for a mapped user)', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'ca-hosts-')), 'pki');
    const { ca } = await CertificateAuthority.init(dir);
    for (const host of ['CN=s2,O=TRE', 'urn:tre:tre:s2', 'a b', ''])
      await expect(ca.issueNatsServer([host])).rejects.toThrow(/neither an IP address nor a DNS name/);
    await expect(ca.issueEnrollmentServer(['urn:tre:tre:s2'])).rejects.toThrow(PkiError);
  });
});

describe('our MQTT broker and certificates with clientAuth that name no party', () => {
  it("refuses the TRE's own certificate and the NATS servers' certificate as MQTT clients", async () => {
    const fx = await startTreFixture();
    try {
      const tre = {
        key: join(fx.treDir, 'tre.key'),
        cert: join(fx.treDir, 'tre.crt'),
        ca: fx.ca.paths.caCert,
      };
      await expect(connectWith(fx.url, tre)).rejects.toThrow(/Not authorized/i);
      const nats = await fx.ca.issueNatsServer();
      const files = { key: join(fx.dir, 'nats.key'), cert: join(fx.dir, 'nats.crt'), ca: fx.ca.paths.caCert };
      await writeFile(files.key, nats.key, { mode: 0o600 });
      await writeFile(files.cert, nats.cert);
      await expect(connectWith(fx.url, files)).rejects.toThrow(/Not authorized/i);
    } finally {
      await fx.close();
    }
  });
});
