/**
 * The keys of a dev cluster's TREs (dev-cluster.ts) and the release they are sealed to: each TRE's
 * attestation key endorsed by the regulator, its TLS and data keys sealed to the whitelisted
 * measurement, and the snapshot of the build the TREs run (`dir/release`). Keys sealed to an
 * earlier build are re-sealed by that build's snapshot (`tre enroll reseal`, the path of an
 * approved update); without it they are refused, or with `reprovision` made anew.
 */
import { execFile } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { Tpm } from '@tre/hardware';
import type { AttestationPolicy, MeasurementEvent } from '@tre/protocol';
import {
  APPLICATION_PCR,
  attestationPolicyFor,
  copyRelease,
  productionPackages,
  replayPcr,
  treRoot,
} from '../attestation/measurement.js';
import { hasSealedSecrets } from '../attestation/sealed-secrets.js';
import { provisionTre } from '../attestation/tre-enrollment.js';
import { endorseAk } from '../pki/ak-endorsement.js';
import { type CertificateAuthority, pkiPaths } from '../pki/certificate-authority.js';
import { DevClusterError } from './dev-cluster-error.js';

/** The whitelist's policy id (and, with -update, the one naming two builds during a re-seal). */
export const POLICY_ID = 'dev-cluster';

/** Where a TRE's files are kept under the cluster's directory (`s1`; a standby of s1: `s1-b`). */
export function shardPaths(dir: string, instance: string) {
  const base = join(dir, instance);
  return {
    swtpm: join(base, 'swtpm'),
    pki: join(base, 'pki'),
    data: join(base, 'data'),
    akCert: join(base, 'data', 'tpm', 'ak.crt'),
    /** The PCR 23 value its keys were sealed to (written when they were). */
    sealedFor: join(base, 'sealed-for.json'),
  };
}

/**
 * A TRE's AK certificate at `<data>/tpm/ak.crt`, endorsed by the regulator for its shard (returns true)
 * unless the one there certifies this TPM's AK under this CA and is still valid.
 */
export async function endorseIfNeeded(
  ca: CertificateAuthority,
  shard: string,
  tcti: string,
  paths: ReturnType<typeof shardPaths>,
): Promise<boolean> {
  const existing = await readFile(paths.akCert, 'utf8').catch(() => undefined);
  const tpm = Tpm.open({ tcti, keystoreDir: join(paths.data, 'tpm') });
  try {
    tpm.createAk(); // unless it exists
    if (existing && certifies(existing, tpm.publicKeyPem(), ca)) return false;
    await writeFile(paths.akCert, await endorseAk(tpm, ca, shard, { allowUncertifiedEk: true }));
    return true;
  } finally {
    tpm.close();
  }
}

/**
 * The whitelist of what a shard measures, computed while a TPM is open: this process then maps
 * what a shard maps at its measured start (the TPM stack and its TCTI, unloaded again on close).
 * Boot PCR values are read from that TPM (every swtpm's are the same).
 */
export function whitelistOn(
  tcti: string,
  paths: ReturnType<typeof shardPaths>,
  config: Record<string, unknown>,
  bootPcrs: number[],
) {
  const tpm = Tpm.open({ tcti, keystoreDir: join(paths.data, 'tpm') });
  try {
    return attestationPolicyFor(config, {
      policyId: POLICY_ID,
      issuedAt: new Date(),
      bootPcrValues: Object.fromEntries(bootPcrs.map((p) => [p, tpm.pcrRead(p).toString('hex')])),
    });
  } finally {
    tpm.close();
  }
}

/** The application PCR as the TPM holds it now (after sealing: the value the keys are sealed to). */
export function applicationPcr(tcti: string, paths: ReturnType<typeof shardPaths>): string {
  const tpm = Tpm.open({ tcti, keystoreDir: join(paths.data, 'tpm') });
  try {
    return tpm.pcrRead(APPLICATION_PCR).toString('hex');
  } finally {
    tpm.close();
  }
}

function certifies(certPem: string, publicKeyPem: string, ca: CertificateAuthority): boolean {
  try {
    const cert = new X509Certificate(certPem);
    const root = new X509Certificate(ca.certificate.toString('pem'));
    return (
      cert.publicKey.equals(createPublicKey(publicKeyPem)) &&
      cert.verify(root.publicKey) &&
      Date.parse(cert.validTo) > Date.now()
    );
  } catch {
    return false;
  }
}

/**
 * The shard's TLS and data keys sealed to the whitelisted measurement and its certificate from
 * this CA: kept when they are (the store stays readable), made when missing. Keys sealed to
 * another build are re-sealed to this one by the release they were sealed for (its snapshot runs
 * `tre enroll reseal`, the path of an approved update), so the store stays readable; without that
 * snapshot they are refused, or with `reprovision` made anew, the store moved aside.
 */
export async function sealKeys(a: {
  ca: CertificateAuthority;
  /** The TRE's directory name: its shard's (s1), or a standby's (s1-b). */
  instance: string;
  /** Its shard, the identity its certificate names. */
  shard: string;
  tcti: string;
  dir: string;
  policy: AttestationPolicy;
  release: ReleaseRecord | undefined;
  config: Record<string, unknown>;
  settings: { bootPcrs: number[] };
  o: { reprovision: boolean; progress: (line: string) => void };
}): Promise<void> {
  const paths = shardPaths(a.dir, a.instance);
  const who = tre(a.instance, a.shard);
  const pcr = a.policy.pcrValues[String(APPLICATION_PCR)]![0]!;
  let sealedFor = await readFile(paths.sealedFor, 'utf8')
    .then((text) => (JSON.parse(text) as { pcr?: string }).pcr)
    .catch(() => undefined);
  if (!hasSealedSecrets(paths.data)) sealedFor = undefined;
  if (sealedFor !== undefined && sealedFor !== pcr) {
    if (a.release?.pcr === sealedFor) {
      a.o.progress(
        `${who}: the build changed since its keys were sealed; the build they were sealed for re-seals them to this one (\`tre enroll reseal\`)`,
      );
      await resealWithRelease({ ...a, who, paths, from: a.release, to: pcr });
      await writeSealedFor(paths, pcr);
      sealedFor = pcr;
    } else if (a.o.reprovision) {
      const aside = await moveStoreAside(paths.data, sealedFor);
      a.o.progress(`${who}: keys sealed to another build; its old store moved to ${aside}`);
      sealedFor = undefined;
    } else
      throw new DevClusterError(
        'KEYS_SEALED_TO_ANOTHER_BUILD',
        `${who}'s keys are sealed to PCR ${APPLICATION_PCR} ${sealedFor.slice(0, 16)}…, but this build with these options measures ${pcr.slice(0, 16)}…, and the release they were sealed for is not in ${releasePaths(a.dir).dir} to re-seal them: a TRE that measures differently cannot unseal its keys (that is what sealing is for). Start again with --reprovision (new keys; the shards' stores, unreadable without the old ones, are moved aside), or use another --dir`,
      );
  }
  const caPem = a.ca.certificate.toString('pem');
  const shardCa = await readFile(pkiPaths(paths.pki).caCert, 'utf8').catch(() => undefined);
  if (sealedFor === pcr && existsSync(pkiPaths(paths.pki).treCert) && sameCertificate(shardCa, caPem)) {
    a.o.progress(`${who}: reusing its sealed keys and store`);
    return;
  }
  a.o.progress(`${who}: making its TLS and data keys, sealed to its measurement (swtpm)`);
  await provisionTre(a.ca, {
    tcti: a.tcti,
    dataDir: paths.data,
    pkiDir: paths.pki,
    treId: a.shard, // every TRE of a shard has a certificate naming urn:tre:tre:<shard>
    hosts: [],
    config: a.config,
    bootPcrs: a.settings.bootPcrs,
    force: true, // keeps the data key when this measurement can unseal it
  });
  const sealedTo = applicationPcr(a.tcti, paths);
  await writeSealedFor(paths, sealedTo);
  if (sealedTo !== pcr)
    throw new DevClusterError(
      'REBUILT_DURING_START',
      `${who}'s keys were sealed to PCR ${APPLICATION_PCR} ${sealedTo.slice(0, 16)}…, not to the whitelisted ${pcr.slice(0, 16)}…: the TRE was rebuilt while the cluster was being set up; start again once the build is done`,
    );
}

/** A TRE as messages name it: `shard s1`, or `standby s1-b of s1`. */
export const tre = (instance: string, shard: string) =>
  instance === shard ? `shard ${shard}` : `standby ${instance} of ${shard}`;

const writeSealedFor = (paths: ReturnType<typeof shardPaths>, pcr: string) =>
  writeFile(paths.sealedFor, `${JSON.stringify({ pcr, sealedAt: new Date().toISOString() })}\n`);

/** Where the snapshot of the release the shards run is kept, and what it measures. */
export function releasePaths(dir: string) {
  const { base } = productionPackages();
  const snapshot = join(dir, 'release');
  return {
    dir: snapshot,
    cli: join(snapshot, relative(base, treRoot()), 'dist', 'cli.js'),
    record: join(dir, 'release.json'),
  };
}

/** The release snapshot's measurement: PCR 23 with the shards' options it was measured with. */
export interface ReleaseRecord {
  pcr: string;
  treArgs: string[];
}

export async function readRelease(dir: string): Promise<ReleaseRecord | undefined> {
  const paths = releasePaths(dir);
  if (!existsSync(paths.cli)) return undefined;
  return readFile(paths.record, 'utf8')
    .then((text) => JSON.parse(text) as ReleaseRecord)
    .catch(() => undefined);
}

/** `tre <args>` of a release, with this process's Node flags (they are measured); its stdout. */
async function runTre(cli: string, args: string[]): Promise<string> {
  const run = promisify(execFile);
  const { stdout } = await run(process.execPath, [...process.execArgv, cli, ...args], {
    maxBuffer: 64 * 1024 * 1024,
  }).catch((err: Error & { stderr?: string }) => {
    throw new Error(`tre ${args.slice(0, 2).join(' ')}: ${err.stderr?.trim() || err.message}`);
  });
  return stdout;
}

/**
 * A copy of this build (what a TRE measures: each workspace's package.json, bin/ and dist/, every
 * production dependency) for the shards to run, so that a rebuild of the tree changes nothing
 * until the next start; checked to measure as `record.pcr` (its own `tre measure` on the TPM).
 */
export async function snapshotRelease(dir: string, record: ReleaseRecord, tcti: string): Promise<void> {
  const paths = releasePaths(dir);
  const next = `${paths.dir}.next`;
  await rm(next, { recursive: true, force: true });
  await copyRelease(next);
  const nextCli = join(next, relative(paths.dir, paths.cli));
  const events = JSON.parse(
    await runTre(nextCli, ['measure', '--cluster', ...record.treArgs, '--tpm', tcti, '--json']),
  ) as MeasurementEvent[];
  const measured = replayPcr(events);
  if (measured !== record.pcr) {
    await rm(next, { recursive: true, force: true });
    throw new DevClusterError(
      'REBUILT_DURING_START',
      `the snapshot of this build measures PCR ${APPLICATION_PCR} ${measured.slice(0, 16)}…, not ${record.pcr.slice(0, 16)}… as its keys were sealed: the TRE was rebuilt while the cluster was being set up; start again once the build is done`,
    );
  }
  await rm(paths.dir, { recursive: true, force: true });
  await rename(next, paths.dir);
  await writeFile(paths.record, `${JSON.stringify(record)}\n`);
}

/**
 * Re-seals a shard's keys from the release they were sealed for to PCR `to`: that release (its
 * snapshot, with the options it ran with) unseals them under its own measurement and seals them
 * to `to`, given a regulator-signed whitelist naming both.
 */
async function resealWithRelease(a: {
  ca: CertificateAuthority;
  dir: string;
  /** `shard s1`, or `standby s1-b of s1`, for messages. */
  who: string;
  tcti: string;
  policy: AttestationPolicy;
  paths: ReturnType<typeof shardPaths>;
  from: ReleaseRecord;
  to: string;
}): Promise<void> {
  const both: AttestationPolicy = {
    ...a.policy,
    policyId: `${POLICY_ID}-update`,
    pcrValues: { ...a.policy.pcrValues, [String(APPLICATION_PCR)]: [a.to, a.from.pcr] },
  };
  const whitelist = join(a.dir, 'update-policy.jws');
  await writeFile(whitelist, `${await a.ca.signAsRegulator('attestationPolicy', both)}\n`);
  const args = ['enroll', 'reseal', '--cluster', ...a.from.treArgs, '--tpm', a.tcti];
  await runTre(releasePaths(a.dir).cli, [
    ...args,
    ...['--data', a.paths.data, '--pki', a.paths.pki, '--whitelist', whitelist, '--to', a.to],
  ]).catch((err: Error) => {
    throw new DevClusterError(
      'KEYS_SEALED_TO_ANOTHER_BUILD',
      `${a.who}'s keys could not be re-sealed to this build by the release they were sealed for (${err.message}); if Node or a system library changed since, that release no longer measures as it did: start again with --reprovision (new keys; the shards' stores are moved aside), or use another --dir`,
    );
  });
}

function sameCertificate(a: string | undefined, b: string): boolean {
  try {
    return a !== undefined && new X509Certificate(a).fingerprint256 === new X509Certificate(b).fingerprint256;
  } catch {
    return false;
  }
}

/** Moves the store files (`tre.sqlite*`) of a data directory into a sub-directory named for `pcr`. */
export async function moveStoreAside(dataDir: string, pcr: string): Promise<string> {
  const aside = join(dataDir, `unreadable-store-${pcr.slice(0, 12)}`);
  await mkdir(aside, { recursive: true, mode: 0o700 });
  for (const file of await readdir(dataDir))
    if (file.startsWith('tre.sqlite')) await rename(join(dataDir, file), join(aside, file));
  return aside;
}
