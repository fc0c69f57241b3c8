/**
 * A local cluster of TRE shards for development and benchmarks (`tre cluster`, issue 21): the
 * regulator's PKI, a NATS cluster on loopback (nats-servers.ts), and per shard s1..sN a software
 * TPM, its attestation key endorsed by the regulator, its TLS and data keys sealed to the
 * measurement `tre start --cluster` will have, the regulator's whitelist of that measurement, and
 * `tre start --cluster` as a child process of its own. Everything lives under `dir` and is reused:
 * a second run keeps the CA, the keys, the sealed stores and the TPM state.
 *
 * The measured configuration is parsed from the same options as `tre start` (`withTreOptions`
 * with `--cluster` and the caller's `treArgs`), so no default is written twice. The shards run a
 * snapshot of the build (`dir/release`), so a rebuild of the tree changes nothing until the next
 * start. There, keys sealed to the previous build are re-sealed to the new one by that build's
 * snapshot (`tre enroll reseal` with a whitelist naming both, the path of an approved update), and
 * the stores stay readable. When that cannot be done (no snapshot; Node changed) it is refused
 * with what to do, or with `reprovision` the shards get new keys and their old stores are moved
 * aside. Production runs one `tre start --cluster` per machine with a hardware TPM instead.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm, Tpm } from '@tre/hardware';
import type { AttestationPolicy, MeasurementEvent } from '@tre/protocol';
import { Command } from 'commander';
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
import { measuredConfigOf, type TreFlags, treSettingsFrom, withTreOptions } from '../cli/tre-options.js';
import { endorseAk } from '../pki/ak-endorsement.js';
import { CertificateAuthority, type IssuedFiles, pkiPaths } from '../pki/certificate-authority.js';
import {
  adminUser,
  certifiedBy,
  freePorts,
  type NatsCluster,
  natsServerTls,
  shardUser,
  startNatsCluster,
} from './nats-servers.js';

export interface DevClusterOptions {
  /** Where everything is kept (made if missing; reused when present). */
  dir: string;
  /** How many shards, s1..sN (default 3). */
  shards?: number;
  /** How many NATS servers (default 3). */
  natsNodes?: number;
  /** Shard sK listens for MQTT on basePort + K - 1; 0 or undefined: free ports. */
  basePort?: number;
  /** More `tre start` options for every shard (`withTreOptions`: measured, so the whitelist follows). */
  treArgs?: string[];
  /** After a rebuild: new keys for shards whose keys are sealed to another measurement (old stores moved aside). */
  reprovision?: boolean;
  /** The shards' and NATS servers' log lines, each prefixed with its source, at `logLevel` and above. */
  log?: (line: string) => void;
  /** A pino level name (default info); the shards themselves log at their measured --log-level. */
  logLevel?: string;
  /** One line per step while the cluster starts. */
  progress?: (line: string) => void;
  /** How long each shard may take to listen (default 120 s: a measured start hashes the release). */
  startTimeoutMs?: number;
  /** Aborting stops what was started and rejects with code ABORTED. */
  signal?: AbortSignal;
}

export interface DevShard {
  name: string;
  /** Its MQTT endpoint (mutual TLS). */
  url: string;
  port: number;
  pid: number;
  /** Its TPM, `swtpm:host=...,port=...`. */
  tcti: string;
  pkiDir: string;
  dataDir: string;
  /** Its /metrics endpoint, when the options after `--` include --metrics. */
  metricsUrl?: string;
  /** Resolves with the exit code (null: killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** Sends `signal` (default SIGTERM) and waits for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface DevCluster {
  shards: DevShard[];
  nats: NatsCluster;
  /** The regulator's client certificate, the NATS admin (`adminUser('reg')`). */
  admin: IssuedFiles;
  /** The regulator's PKI: `tre pki issue --dir <regulatorDir>` issues party and meter certificates. */
  regulatorDir: string;
  caFile: string;
  crlFile: string;
  /** The regulator-signed whitelist of the shards' measurement (JWS), for agents and parties. */
  policyFile: string;
  /** PCR 23 as the whitelist names it. */
  pcr: string;
  /** Stops the shards (SIGTERM, then waits), then NATS, then the software TPMs. */
  stop(): Promise<void>;
}

export class DevClusterError extends Error {
  override readonly name = 'DevClusterError';
  constructor(
    readonly code:
      | 'INVALID_ARGUMENT'
      | 'SWTPM_FAILED'
      | 'KEYS_SEALED_TO_ANOTHER_BUILD'
      | 'REBUILT_DURING_START'
      | 'SHARD_EXITED'
      | 'SHARD_NOT_READY'
      | 'ABORTED',
    message: string,
  ) {
    super(message);
  }
}

const DEFAULTS = {
  shards: 3,
  natsNodes: 3,
  basePort: 0,
  treArgs: [] as string[],
  reprovision: false,
  log: (_line: string) => {},
  logLevel: 'info',
  progress: (_line: string) => {},
  startTimeoutMs: 120_000,
  /** How long a shard may take to stop on SIGTERM before it is killed. */
  stopTimeoutMs: 15_000,
  /** The regulator's client id, the NATS admin. */
  adminId: 'reg',
  policyId: 'dev-cluster',
} as const;

const HOST = '127.0.0.1';
const LOG_TAIL = 40;

/** pino's level numbers by name. */
export const LOG_LEVELS: Record<string, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Number.POSITIVE_INFINITY,
};

/** Where a shard's files are kept under the cluster's directory. */
export function shardPaths(dir: string, shard: string) {
  const base = join(dir, shard);
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
 * What `tre start --cluster <treArgs>` measures, parsed by the same options as `tre start` (so
 * defaults are never repeated here), with the settings it implies.
 */
export function shardConfiguration(treArgs: readonly string[]) {
  const command = withTreOptions(new Command('tre start'))
    .exitOverride()
    .configureOutput({ writeErr: () => {}, writeOut: () => {} });
  try {
    command.parse(['--cluster', ...treArgs], { from: 'user' });
  } catch (err) {
    throw new DevClusterError(
      'INVALID_ARGUMENT',
      `the shards' options ${JSON.stringify(treArgs.join(' '))}: ${(err as Error).message} (only the measured options of \`tre start\` are given after --, e.g. --min-group-size 5)`,
    );
  }
  if (command.args.length > 0)
    throw new DevClusterError(
      'INVALID_ARGUMENT',
      `unexpected ${JSON.stringify(command.args.join(' '))} among the shards' options`,
    );
  const settings = treSettingsFrom(command.opts<TreFlags>());
  return { settings, config: measuredConfigOf(settings) };
}

/**
 * One line of a child's log for the console: a pino JSON line as `[s1] INFO message k=v ...` when
 * its level is at least `minLevel`; any other line as it is.
 */
export function formatLogLine(source: string, line: string, minLevel: number): string | undefined {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `[${source}] ${line}`;
  }
  if (typeof entry !== 'object' || entry === null || typeof entry.level !== 'number')
    return `[${source}] ${line}`;
  if (entry.level < minLevel) return undefined;
  const name = Object.entries(LOG_LEVELS).find(([, n]) => n === entry.level)?.[0] ?? String(entry.level);
  const { level: _l, time: _t, pid: _p, hostname: _h, name: _n, msg, ...rest } = entry;
  const fields = Object.entries(rest).map(([k, v]) => {
    if (v && typeof v === 'object' && 'message' in v) return `${k}=${JSON.stringify((v as Error).message)}`;
    return `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`;
  });
  return [`[${source}]`, name.toUpperCase(), String(msg ?? ''), ...fields].join(' ');
}

/** nats-server's `[INF]`, `[WRN]` ... as a pino level: its routine lines count as debug here. */
export function natsLineLevel(line: string): number {
  if (/\[(ERR|FTL)\]/.test(line)) return LOG_LEVELS.error!;
  if (/\[WRN\]/.test(line)) return LOG_LEVELS.warn!;
  if (/\[(DBG|TRC)\]/.test(line)) return LOG_LEVELS.trace!;
  return LOG_LEVELS.debug!;
}

function checkOptions(o: typeof DEFAULTS & DevClusterOptions): void {
  const count = (v: number, what: string, max: number) => {
    if (!Number.isInteger(v) || v < 1 || v > max)
      throw new DevClusterError(
        'INVALID_ARGUMENT',
        `${what} must be a whole number from 1 to ${max}, got ${v}`,
      );
  };
  count(o.shards, 'shards', 64);
  count(o.natsNodes, 'natsNodes', 9);
  if (!Number.isInteger(o.basePort) || o.basePort < 0 || o.basePort + o.shards - 1 > 65_535)
    throw new DevClusterError(
      'INVALID_ARGUMENT',
      `basePort must be 0 (free ports) or a port with room for ${o.shards} after it, got ${o.basePort}`,
    );
  if (!(o.logLevel in LOG_LEVELS))
    throw new DevClusterError(
      'INVALID_ARGUMENT',
      `log level ${o.logLevel}: one of ${Object.keys(LOG_LEVELS).join(', ')}`,
    );
}

/** Something started that `stop` undoes. */
interface Started {
  stop(): Promise<void>;
}

export async function startDevCluster(opts: DevClusterOptions): Promise<DevCluster> {
  const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
  const o = { ...DEFAULTS, ...(given as DevClusterOptions) } as typeof DEFAULTS & DevClusterOptions;
  checkOptions(o);
  const dir = resolve(o.dir);
  const names = Array.from({ length: o.shards }, (_, i) => `s${i + 1}`);
  const { settings, config } = shardConfiguration(o.treArgs);
  const minLevel = LOG_LEVELS[o.logLevel]!;
  const checkAborted = () => {
    if (o.signal?.aborted)
      throw new DevClusterError('ABORTED', 'the start was interrupted; stopped what had started');
  };
  // Stopped in reverse order when the start fails, and by stop(): shards, then NATS, then swtpm.
  const started: Started[] = [];
  const stopAll = async () => {
    for (const s of started.splice(0).reverse()) await s.stop().catch(() => {});
  };
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const regulatorDir = join(dir, 'regulator');
    const reused = existsSync(pkiPaths(regulatorDir).caKey);
    o.progress(`regulator: ${reused ? 'reusing the' : 'creating a'} root CA in ${regulatorDir}`);
    const ca = reused
      ? await CertificateAuthority.open(regulatorDir)
      : (await CertificateAuthority.init(regulatorDir)).ca;

    const swtpms: Swtpm[] = [];
    for (const name of names) {
      checkAborted();
      o.progress(`shard ${name}: software TPM (state in ${shardPaths(dir, name).swtpm})`);
      const swtpm = await startSwtpm({ dir: shardPaths(dir, name).swtpm }).catch((err: Error) => {
        throw new DevClusterError(
          'SWTPM_FAILED',
          `shard ${name}'s software TPM did not start (${err.message}); install swtpm (scripts/setup.sh demo)`,
        );
      });
      started.push(swtpm);
      swtpms.push(swtpm);
    }
    for (const [i, name] of names.entries()) {
      checkAborted();
      if (await endorseIfNeeded(ca, name, swtpms[i]!.tcti, shardPaths(dir, name)))
        o.progress(`shard ${name}: attestation key endorsed by the regulator`);
    }
    const policy = whitelistOn(swtpms[0]!.tcti, shardPaths(dir, names[0]!), config, settings.bootPcrs);
    const pcr = policy.pcrValues[String(APPLICATION_PCR)]![0]!;
    const release = await readRelease(dir);
    for (const [i, name] of names.entries()) {
      checkAborted();
      await sealKeys({ ca, shard: name, tcti: swtpms[i]!.tcti, dir, policy, release, config, settings, o });
    }
    if (release?.pcr !== pcr) {
      o.progress(`release: a snapshot of this build for the shards to run (${releasePaths(dir).dir})`);
      await snapshotRelease(dir, { pcr, treArgs: [...o.treArgs] }, swtpms[0]!.tcti);
    }
    const policyFile = join(dir, 'policy.jws');
    await writeFile(policyFile, `${await ca.signAsRegulator('attestationPolicy', policy)}\n`);
    o.progress(
      `regulator: whitelist of the shards' measurement (PCR ${APPLICATION_PCR} ${pcr.slice(0, 16)}…) in ${policyFile}`,
    );

    checkAborted();
    const natsTls = await natsServerTls(ca, join(dir, 'nats-tls'));
    const admin = await reusedClient(ca, 'regulator', DEFAULTS.adminId);
    o.progress(`NATS: starting ${o.natsNodes} servers on loopback (mutual TLS, one user per shard)`);
    // Servers starting (routes not up yet) and stopping (clients gone) complain as a matter of course.
    let natsQuiet = true;
    const nats = await startNatsCluster({
      dir: join(dir, 'nats'),
      nodes: o.natsNodes,
      tls: natsTls,
      users: [...names.map(shardUser), adminUser(DEFAULTS.adminId)],
      log: (line) => {
        const level = natsLineLevel(line);
        if ((natsQuiet ? Math.min(level, LOG_LEVELS.debug!) : level) >= minLevel) o.log(`[nats] ${line}`);
      },
    });
    natsQuiet = false;
    started.push({
      stop: () => {
        natsQuiet = true;
        return nats.stop();
      },
    });

    checkAborted();
    o.progress(
      `shards: starting ${names.join(', ')} (each a measured start: it hashes the release, then joins NATS)`,
    );
    // Chosen here, not left to the shards (port 0): a shard logging above info never says which.
    const free = await freePorts(names.length * ((o.basePort === 0 ? 1 : 0) + (settings.metrics ? 1 : 0)));
    const ports = names.map((_, i) => (o.basePort === 0 ? free.shift()! : o.basePort + i));
    const metricsPorts = names.map(() => (settings.metrics ? free.shift() : undefined));
    const launches = names.map((name, i) => {
      const paths = shardPaths(dir, name);
      const args = [
        'start',
        '--cluster',
        ...o.treArgs,
        ...(settings.metrics ? ['--metrics-listen', `${HOST}:${metricsPorts[i]}`] : []),
        ...['--shard', name, '--nats', nats.urls.join(','), '--shards', names.join(',')],
        ...['--peer-policy', policyFile, '--tpm', swtpms[i]!.tcti],
        ...['--pki', paths.pki, '--data', paths.data, '--host', HOST, '--port', String(ports[i])],
      ];
      return launchShard({
        name,
        port: ports[i]!,
        metricsPort: metricsPorts[i],
        cli: releasePaths(dir).cli,
        args,
        tcti: swtpms[i]!.tcti,
        paths,
        minLevel,
        o,
      });
    });
    started.push({ stop: async () => void (await Promise.all(launches.map((l) => l.process.stop()))) });
    const shards = await Promise.all(launches.map((l) => l.ready));
    for (const s of shards) o.progress(`shard ${s.name}: listening on ${s.url} (pid ${s.pid})`);
    let stopping: Promise<void> | undefined;
    return {
      shards,
      nats,
      admin,
      regulatorDir,
      caFile: ca.paths.caCert,
      crlFile: ca.paths.crl,
      policyFile,
      pcr,
      stop: () => {
        stopping ??= stopAll();
        return stopping;
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * The shard's AK certificate at `<data>/tpm/ak.crt`, endorsed by the regulator (returns true)
 * unless the one there certifies this TPM's AK under this CA and is still valid.
 */
async function endorseIfNeeded(
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
function whitelistOn(
  tcti: string,
  paths: ReturnType<typeof shardPaths>,
  config: Record<string, unknown>,
  bootPcrs: number[],
) {
  const tpm = Tpm.open({ tcti, keystoreDir: join(paths.data, 'tpm') });
  try {
    return attestationPolicyFor(config, {
      policyId: DEFAULTS.policyId,
      issuedAt: new Date(),
      bootPcrValues: Object.fromEntries(bootPcrs.map((p) => [p, tpm.pcrRead(p).toString('hex')])),
    });
  } finally {
    tpm.close();
  }
}

/** The application PCR as the TPM holds it now (after sealing: the value the keys are sealed to). */
function applicationPcr(tcti: string, paths: ReturnType<typeof shardPaths>): string {
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
async function sealKeys(a: {
  ca: CertificateAuthority;
  shard: string;
  tcti: string;
  dir: string;
  policy: AttestationPolicy;
  release: ReleaseRecord | undefined;
  config: Record<string, unknown>;
  settings: { bootPcrs: number[] };
  o: { reprovision: boolean; progress: (line: string) => void };
}): Promise<void> {
  const paths = shardPaths(a.dir, a.shard);
  const pcr = a.policy.pcrValues[String(APPLICATION_PCR)]![0]!;
  let sealedFor = await readFile(paths.sealedFor, 'utf8')
    .then((text) => (JSON.parse(text) as { pcr?: string }).pcr)
    .catch(() => undefined);
  if (!hasSealedSecrets(paths.data)) sealedFor = undefined;
  if (sealedFor !== undefined && sealedFor !== pcr) {
    if (a.release?.pcr === sealedFor) {
      a.o.progress(
        `shard ${a.shard}: the build changed since its keys were sealed; the build they were sealed for re-seals them to this one (\`tre enroll reseal\`)`,
      );
      await resealWithRelease({ ...a, paths, from: a.release, to: pcr });
      await writeSealedFor(paths, pcr);
      sealedFor = pcr;
    } else if (a.o.reprovision) {
      const aside = await moveStoreAside(paths.data, sealedFor);
      a.o.progress(`shard ${a.shard}: keys sealed to another build; its old store moved to ${aside}`);
      sealedFor = undefined;
    } else
      throw new DevClusterError(
        'KEYS_SEALED_TO_ANOTHER_BUILD',
        `shard ${a.shard}'s keys are sealed to PCR ${APPLICATION_PCR} ${sealedFor.slice(0, 16)}…, but this build with these options measures ${pcr.slice(0, 16)}…, and the release they were sealed for is not in ${releasePaths(a.dir).dir} to re-seal them: a TRE that measures differently cannot unseal its keys (that is what sealing is for). Start again with --reprovision (new keys; the shards' stores, unreadable without the old ones, are moved aside), or use another --dir`,
      );
  }
  const caPem = a.ca.certificate.toString('pem');
  const shardCa = await readFile(pkiPaths(paths.pki).caCert, 'utf8').catch(() => undefined);
  if (sealedFor === pcr && existsSync(pkiPaths(paths.pki).treCert) && sameCertificate(shardCa, caPem)) {
    a.o.progress(`shard ${a.shard}: reusing its sealed keys and store`);
    return;
  }
  a.o.progress(`shard ${a.shard}: making its TLS and data keys, sealed to its measurement (swtpm)`);
  await provisionTre(a.ca, {
    tcti: a.tcti,
    dataDir: paths.data,
    pkiDir: paths.pki,
    treId: a.shard,
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
      `shard ${a.shard}'s keys were sealed to PCR ${APPLICATION_PCR} ${sealedTo.slice(0, 16)}…, not to the whitelisted ${pcr.slice(0, 16)}…: the TRE was rebuilt while the cluster was being set up; start again once the build is done`,
    );
}

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
interface ReleaseRecord {
  pcr: string;
  treArgs: string[];
}

async function readRelease(dir: string): Promise<ReleaseRecord | undefined> {
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
async function snapshotRelease(dir: string, record: ReleaseRecord, tcti: string): Promise<void> {
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
  shard: string;
  tcti: string;
  policy: AttestationPolicy;
  paths: ReturnType<typeof shardPaths>;
  from: ReleaseRecord;
  to: string;
}): Promise<void> {
  const both: AttestationPolicy = {
    ...a.policy,
    policyId: `${DEFAULTS.policyId}-update`,
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
      `shard ${a.shard}'s keys could not be re-sealed to this build by the release they were sealed for (${err.message}); if Node or a system library changed since, that release no longer measures as it did: start again with --reprovision (new keys; the shards' stores are moved aside), or use another --dir`,
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
async function moveStoreAside(dataDir: string, pcr: string): Promise<string> {
  const aside = join(dataDir, `unreadable-store-${pcr.slice(0, 12)}`);
  await mkdir(aside, { recursive: true, mode: 0o700 });
  for (const file of await readdir(dataDir))
    if (file.startsWith('tre.sqlite')) await rename(join(dataDir, file), join(aside, file));
  return aside;
}

/** A client certificate of this CA, issued unless one is there. */
async function reusedClient(ca: CertificateAuthority, role: 'regulator', id: string): Promise<IssuedFiles> {
  const files = ca.paths.client(role, id);
  const cert = await readFile(files.cert, 'utf8').catch(() => undefined);
  if (cert && existsSync(files.key) && certifiedBy(cert, ca)) return { ...files, ca: ca.paths.caCert };
  return ca.issue(role, id, { force: true });
}

/** Whether something accepts TCP connections on the loopback port. */
function accepts(port: number): Promise<boolean> {
  return new Promise((answer) => {
    const socket = netConnect({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      answer(true);
    });
    socket.once('error', () => answer(false));
  });
}

/**
 * Spawns one `tre start --cluster` on `port`; `ready` resolves once it listens (its "TRE
 * listening" line, or at a log level above info the port taking connections: the TRE listens only
 * once every flow is wired), and rejects with its last log lines if it exits first or takes longer
 * than `startTimeoutMs`.
 */
function launchShard(a: {
  name: string;
  port: number;
  metricsPort?: number;
  /** The snapshot's `tre` CLI. */
  cli: string;
  args: string[];
  tcti: string;
  paths: ReturnType<typeof shardPaths>;
  minLevel: number;
  o: { log: (line: string) => void; startTimeoutMs: number; stopTimeoutMs: number; signal?: AbortSignal };
}): { process: Started; ready: Promise<DevShard> } {
  const { name, o } = a;
  // The shards run with this process's Node flags: they are measured, as they were when sealing here.
  // Their own process group: a Ctrl-C at the terminal reaches this process, which stops them in order.
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, a.cli, ...a.args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  const tail: string[] = [];
  const exited = new Promise<number | null>((done) => child.once('close', (code) => done(code)));
  const alive = () => child.exitCode === null && child.signalCode === null;
  const killNow = () => {
    if (alive()) child.kill('SIGKILL');
  };
  process.once('exit', killNow);
  const kill = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (alive()) child.kill(signal);
    const timer = setTimeout(killNow, o.stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  let listening = false;
  let onListening: () => void = () => {};
  createInterface({ input: child.stderr! }).on('line', (line) => {
    tail.push(line);
    if (tail.length > LOG_TAIL) tail.shift();
    const shown = formatLogLine(name, line, a.minLevel);
    if (shown !== undefined) o.log(shown);
    if (String(parseJson(line)?.msg).startsWith('TRE listening')) onListening();
  });
  const logEnds = () => (tail.length ? `its log ends:\n${tail.join('\n')}` : 'it logged nothing');
  void exited.then((code) => {
    process.removeListener('exit', killNow);
    if (listening) o.log(`[${name}] exited (${code ?? child.signalCode})`);
  });
  const ready = new Promise<DevShard>((resolveReady, rejectReady) => {
    let settled = false;
    const settle = (then: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(poll);
      o.signal?.removeEventListener('abort', onAbort);
      then();
    };
    const timer = setTimeout(
      () =>
        settle(() =>
          rejectReady(
            new DevClusterError(
              'SHARD_NOT_READY',
              `shard ${name} did not listen on port ${a.port} within ${o.startTimeoutMs} ms; ${logEnds()}`,
            ),
          ),
        ),
      o.startTimeoutMs,
    );
    const poll = setInterval(() => {
      void accepts(a.port).then((yes) => {
        if (yes && alive()) onListening();
      });
    }, 250);
    const onAbort = () =>
      settle(() =>
        rejectReady(new DevClusterError('ABORTED', 'the start was interrupted; stopped what had started')),
      );
    o.signal?.addEventListener('abort', onAbort, { once: true });
    onListening = () =>
      settle(() => {
        listening = true;
        resolveReady({
          name,
          url: `mqtts://${HOST}:${a.port}`,
          port: a.port,
          pid: child.pid!,
          tcti: a.tcti,
          pkiDir: a.paths.pki,
          dataDir: a.paths.data,
          metricsUrl: a.metricsPort === undefined ? undefined : `http://${HOST}:${a.metricsPort}/metrics`,
          exited,
          kill,
        });
      });
    void exited.then((code) =>
      settle(() =>
        rejectReady(
          new DevClusterError(
            'SHARD_EXITED',
            `shard ${name} exited (${code ?? child.signalCode}) before it listened; ${logEnds()}`,
          ),
        ),
      ),
    );
    child.once('error', (err) =>
      settle(() =>
        rejectReady(new DevClusterError('SHARD_EXITED', `cannot run shard ${name}: ${err.message}`)),
      ),
    );
  });
  return { process: { stop: () => kill() }, ready };
}

function parseJson(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
