/**
 * Many meter certificates at once, for the benchmarks that hold thousands of sessions: one shared
 * key pair, one real certificate per meter id (`urn:tre:meter:<prefix><i>`), signed with the
 * regulator CA's key straight from its PKI directory (`CertificateAuthority.issue` makes a key pair
 * and rewrites the CA's index per certificate, which is quadratic in thousands).
 */
import { webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** `n` client certificates for meters `<prefix>0` ... `<prefix>(n-1)`, all for the one key in `keyPem`. */
export async function meterCertificates(
  pkiDir: string,
  n: number,
  prefix = 'c',
): Promise<{ keyPem: string; certs: string[]; ids: string[] }> {
  const caCert = new x509.X509Certificate(await readFile(join(pkiDir, 'ca.crt'), 'utf8'));
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(await readFile(join(pkiDir, 'ca.key'), 'utf8')),
    ALG,
    false,
    ['sign'],
  );
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const keyPem = x509.PemConverter.encode(
    await webcrypto.subtle.exportKey('pkcs8', keys.privateKey),
    'PRIVATE KEY',
  );
  const certs: string[] = [];
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${i}`;
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: (0x100000 + i).toString(16),
      subject: `CN=meter:${id}`,
      issuer: caCert.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      signingAlgorithm: ALG,
      publicKey: keys.publicKey,
      signingKey: caKey,
      extensions: [
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `urn:tre:meter:${id}` }]),
      ],
    });
    certs.push(cert.toString('pem'));
    ids.push(id);
  }
  return { keyPem, certs, ids };
}
