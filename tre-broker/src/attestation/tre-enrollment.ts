/**
 * The TRE's TLS identity is born in the TRE: `enrollTls` makes the key pair on the TRE's machine,
 * measures the TRE as `tre start` will, seals the private key (and a new data key for the store)
 * to that measurement at once, and returns a certificate request for the regulator
 * (`tre pki sign-csr --role tre`). No plaintext copy of the private key is written, except in
 * development (no TPM), where it goes to a file named for it.
 *
 * `resealForRelease` migrates the sealed keys from release N to N+1: run on release N, it needs
 * N's measurement to unseal, and a regulator-signed whitelist that names both N and N+1.
 */
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as x509 from '@peculiar/x509';
import { Tpm } from '@tre/hardware';
import { type AttestationPolicy, attestationPolicySchema, verifyContent } from '@tre/protocol';
// certificate-authority.js also sets @peculiar/x509 up (reflect-metadata, the WebCrypto provider).
import {
  type CertificateAuthority,
  pkiPaths,
  treNames,
  type Validity,
} from '../pki/certificate-authority.js';
import { TreConfigError } from '../tre-config-error.js';
import { Measurement } from './measured-start.js';
import { APPLICATION_PCR } from './measurement.js';
import { hasSealedSecrets, resealSecrets, sealSecrets, unsealSecrets } from './sealed-secrets.js';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** Where a development TRE (no TPM) keeps its store's key, unsealed: the name says what it is. */
export const developmentDataKeyFile = (dataDir: string) => join(dataDir, 'data-key.development-only');

/** Development (no TPM): the store's key from its file, made (0600) when there is none yet. */
export async function developmentDataKey(dataDir: string): Promise<{ key: Buffer; created: boolean }> {
  const file = developmentDataKeyFile(dataDir);
  const existing = await readFile(file).catch(() => undefined);
  if (existing?.length === 32) return { key: existing, created: false };
  if (existing) throw new TreConfigError(`${file} is not a 32-byte data key`);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  await writeFile(file, key, { mode: 0o600, flag: 'wx' });
  return { key, created: true };
}

export interface EnrollTlsOptions {
  /** The TPM; without it the key is a development key in `<pki>/tre.key`. */
  tcti?: string;
  dataDir: string;
  /** The TRE's own certificate directory (where the development key goes). */
  pkiDir: string;
  treId: string;
  /** DNS names or IP addresses the TRE is reached at (localhost and 127.0.0.1 are always added). */
  hosts: string[];
  /** The measured configuration `tre start` will run with (`measuredConfigOf`). */
  config: Record<string, unknown>;
  bootPcrs: number[];
  /** Replace keys sealed before (a store encrypted under the old data key becomes unreadable). */
  force?: boolean;
}

export async function enrollTls(
  o: EnrollTlsOptions,
): Promise<{ csrPem: string; sealedIn?: string; developmentKey?: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${o.treId}, O=TRE`,
    keys,
    signingAlgorithm: ALG,
    extensions: [new x509.SubjectAlternativeNameExtension(treNames(o.treId, o.hosts))],
  });
  const pem = x509.PemConverter.encode(
    await webcrypto.subtle.exportKey('pkcs8', keys.privateKey),
    'PRIVATE KEY',
  );
  await mkdir(o.pkiDir, { recursive: true, mode: 0o700 }); // where its certificate goes
  if (!o.tcti) {
    const file = pkiPaths(o.pkiDir).treKey; // development: the TLS key unsealed
    await writeFile(file, pem, { mode: 0o600, flag: o.force ? 'w' : 'wx' }).catch(
      (err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST' ? new TreConfigError(`${file} exists; pass --force to replace it`) : err;
      },
    );
    await chmod(file, 0o600);
    return { csrPem: csr.toString('pem'), developmentKey: file };
  }
  if (hasSealedSecrets(o.dataDir) && !o.force)
    throw new TreConfigError(
      `this TRE is already enrolled (keys sealed in ${join(o.dataDir, 'tpm')}); pass --force to make a new TLS key (the store keeps its data key when the current measurement can unseal it)`,
    );
  const tpm = Tpm.open({ tcti: o.tcti, keystoreDir: join(o.dataDir, 'tpm') });
  try {
    Measurement.take(tpm, o.config);
    // Re-enrolling keeps the store readable when this measurement can still unseal its data key.
    let dataKey: Buffer = randomBytes(32);
    if (hasSealedSecrets(o.dataDir)) {
      try {
        dataKey = unsealSecrets(tpm, o.dataDir).dataKey;
      } catch {
        // another measurement: a new data key (the old store cannot be read by this release)
      }
    }
    sealSecrets(tpm, o.dataDir, { tlsKey: pem, dataKey }, [APPLICATION_PCR, ...o.bootPcrs]);
  } finally {
    tpm.close();
  }
  return { csrPem: csr.toString('pem'), sealedIn: join(o.dataDir, 'tpm') };
}

/**
 * The demo and tests, where the regulator and the TRE share one machine: the TRE's key is made by
 * `enrollTls` all the same, and its directory (certificate, root, a link to the regulator's CRL) is
 * separate from the regulator's, which keeps ca.key.
 */
export async function provisionTre(
  ca: CertificateAuthority,
  o: EnrollTlsOptions & { validity?: Validity },
): Promise<void> {
  const { csrPem } = await enrollTls(o);
  const paths = pkiPaths(o.pkiDir);
  await mkdir(o.pkiDir, { recursive: true, mode: 0o700 });
  await writeFile(paths.treCert, await ca.signRequest(csrPem, 'tre', o.treId, o.validity, o.hosts));
  await copyFile(ca.paths.caCert, paths.caCert);
  await rm(paths.crl, { force: true });
  await symlink(resolve(ca.paths.crl), paths.crl);
}

/** The regulator-signed whitelist (JWS), verified with the regulator root the TRE holds. */
export async function readWhitelist(jws: string, caCertPem: string): Promise<AttestationPolicy> {
  return verifyContent(
    'attestationPolicy',
    jws.trim(),
    new X509Certificate(caCertPem).publicKey,
    attestationPolicySchema,
  );
}

/**
 * Migrates the sealed keys to the next release: measures this (old) release, checks the signed
 * whitelist accepts it and names exactly one other application-PCR value (or `to`), unseals under
 * the old measurement and seals to the new value. Afterwards only the new release starts.
 */
export async function resealForRelease(o: {
  tcti: string;
  dataDir: string;
  config: Record<string, unknown>;
  bootPcrs: number[];
  whitelistJws: string;
  caCertPem: string;
  to?: string;
}): Promise<{ from: string; to: string }> {
  const policy = await readWhitelist(o.whitelistJws, o.caCertPem).catch((err: Error) => {
    throw new TreConfigError(
      `the whitelist is not signed by the regulator root this TRE holds: ${err.message}`,
    );
  });
  const accepted = policy.pcrValues[String(APPLICATION_PCR)] ?? [];
  const tpm = Tpm.open({ tcti: o.tcti, keystoreDir: join(o.dataDir, 'tpm') });
  try {
    Measurement.take(tpm, o.config);
    const from = tpm.pcrRead(APPLICATION_PCR).toString('hex');
    if (!accepted.includes(from))
      throw new TreConfigError(
        `the whitelist ${policy.policyId} does not name this release's measurement (PCR ${APPLICATION_PCR} ${from}); ask the regulator for one that names both the running release and the new one`,
      );
    const others = accepted.filter((v) => v !== from);
    const to = o.to ?? (others.length === 1 ? others[0] : undefined);
    if (!to || !others.includes(to))
      throw new TreConfigError(
        others.length === 0
          ? `the whitelist ${policy.policyId} names only this release: nothing to migrate to`
          : `the whitelist names ${others.length} other releases; choose one with --to (${others.join(', ')})`,
      );
    try {
      resealSecrets(tpm, [APPLICATION_PCR, ...o.bootPcrs], { [APPLICATION_PCR]: Buffer.from(to, 'hex') });
    } catch (err) {
      throw new TreConfigError(
        `this release cannot unseal the TRE's keys (its measurement is not the one they are sealed to): ${(err as Error).message}`,
      );
    }
    return { from, to };
  } finally {
    tpm.close();
  }
}
