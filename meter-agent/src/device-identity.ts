/**
 * Provisioning: the device key is created on the device and never leaves it; the agent writes a
 * PKCS#10 request for the regulator (`tre pki sign-csr`), then installs the signed certificate
 * after checking it matches the key, names this meter, and chains to the regulator root.
 */
import 'reflect-metadata';
import { webcrypto, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import * as x509 from '@peculiar/x509';
import { formatIdentity } from '@tre/protocol';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export class ProvisioningError extends Error {
  override readonly name = 'ProvisioningError';
  readonly code = 'PROVISIONING';
}

/** Creates the key (0600) if absent and writes a CSR for urn:tre:meter:<id>. */
export async function createRequest(meterId: string, keyPath: string, csrPath: string): Promise<void> {
  let keys: CryptoKeyPair;
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
    keys = { privateKey, publicKey };
  } else {
    keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
    await writeFile(
      keyPath,
      x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'),
      { mode: 0o600 },
    );
    await chmod(keyPath, 0o600);
  }
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=meter:${meterId}`,
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: formatIdentity({ role: 'meter', id: meterId }) },
      ]),
    ],
  });
  await writeFile(csrPath, csr.toString('pem'));
}

/** Checks and installs the certificate the regulator signed. */
export async function installCertificate(
  meterId: string,
  keyPath: string,
  certPem: string,
  caPem: string,
  certPath: string,
): Promise<void> {
  const cert = new X509Certificate(certPem);
  const ca = new X509Certificate(caPem);
  if (!cert.verify(ca.publicKey))
    throw new ProvisioningError('the certificate is not signed by the regulator root given');
  const { createPrivateKey } = await import('node:crypto');
  if (!cert.checkPrivateKey(createPrivateKey(await readFile(keyPath, 'utf8')))) {
    throw new ProvisioningError(`the certificate is not for the key in ${keyPath}`);
  }
  const uri = formatIdentity({ role: 'meter', id: meterId });
  if (!cert.subjectAltName?.split(', ').includes(`URI:${uri}`))
    throw new ProvisioningError(`the certificate does not name ${uri}`);
  await writeFile(certPath, certPem);
}
