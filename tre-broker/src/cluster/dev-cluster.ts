/**
 * A local cluster of TRE shards for development and benchmarks (`tre cluster`, issue 21): the
 * regulator's PKI, a NATS cluster on loopback (nats-servers.ts), and per shard s1..sN a software
 * TPM, its attestation key endorsed by the regulator, its TLS and data keys sealed to the
 * measurement `tre start --cluster` will have, the regulator's whitelist of that measurement, and
 * `tre start --cluster` as a child process of its own. Everything lives under `dir` and is reused:
 * a second run keeps the CA, the keys, the sealed stores and the TPM state.
 *
 * With `standbys` K >= 1 the regulator, as NATS admin, makes each shard's journal stream and lease
 * bucket (`ensureShardStreams`, R3 on 3 or more NATS servers), and each shard gets K more TREs
 * (`s1-b`, `s1-c`, ...: the same certificate identity urn:tre:tre:<shard>, a TPM and sealed keys
 * of their own, an MQTT port of their own), started once the primaries serve: they follow the
 * journal and the first to take the lease after the primary stops serves on its own port. A
 * primary's death is reported and the cluster runs on; nothing is restarted.
 *
 * The measured configuration is parsed from the same options as `tre start` (`withTreOptions`
 * with `--cluster` and the caller's `treArgs`), so no default is written twice. The shards run a
 * snapshot of the build (`dir/release`), so a rebuild of the tree changes nothing until the next
 * start. There, keys sealed to the previous build are re-sealed to the new one by that build's
 * snapshot (`tre enroll reseal` with a whitelist naming both, the path of an approved update), and
 * the stores stay readable. When that cannot be done (no snapshot; Node changed) it is refused
 * with what to do, or with `reprovision` the shards get new keys and their old stores are moved
 * aside (dev-release.ts). Each TRE is a child process of its own (dev-shard-process.ts).
 * Production runs one `tre start --cluster` per machine with a hardware TPM instead.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { JetStreamApiError, jetstreamManager } from '@nats-io/jetstream';
import { connect, nanos } from '@nats-io/transport-node';
import { type Swtpm, startSwtpm } from '@tre/hardware';
import { shardSubjects } from '@tre/protocol';
import { Command } from 'commander';
import { APPLICATION_PCR } from '../attestation/measurement.js';
import { measuredConfigOf, type TreFlags, treSettingsFrom, withTreOptions } from '../cli/tre-options.js';
import { CertificateAuthority, type IssuedFiles, pkiPaths } from '../pki/certificate-authority.js';
import { DevClusterError } from './dev-cluster-error.js';
import {
  endorseIfNeeded,
  readRelease,
  releasePaths,
  sealKeys,
  shardPaths,
  snapshotRelease,
  tre,
  whitelistOn,
} from './dev-release.js';
import { type DevTre, HOST, LOG_LEVELS, launchTre, type Started } from './dev-shard-process.js';
import {
  adminUser,
  certifiedBy,
  freePorts,
  type NatsCluster,
  natsServerTls,
  shardUser,
  startNatsCluster,
} from './nats-servers.js';
import { ensureShardStreams } from './shard-journal.js';
import { DEFAULT_LEASE_TTL_MS } from './take-shard.js';

export { DevClusterError } from './dev-cluster-error.js';
export { releasePaths, shardPaths } from './dev-release.js';
export { type DevTre, formatLogLine, LOG_LEVELS } from './dev-shard-process.js';

export interface DevClusterOptions {
  /** Where everything is kept (made if missing; reused when present). */
  dir: string;
  /** How many shards, s1..sN (default 3). */
  shards?: number;
  /**
   * How many standby TREs per shard (default 0: no journal, no failover). From 1 the shards'
   * journal streams and lease buckets are made, and shard s1 gets standbys s1-b, s1-c, ...
   */
  standbys?: number;
  /** With standbys: the TTL of the shards' lease buckets, given to every TRE (default 10 s). */
  leaseTtlMs?: number;
  /** How many NATS servers (default 3). */
  natsNodes?: number;
  /**
   * Shard sK listens for MQTT on basePort + K - 1, its J-th standby on basePort + J * shards + K - 1;
   * 0 or undefined: free ports.
   */
  basePort?: number;
  /** More `tre start` options for every shard (`withTreOptions`: measured, so the whitelist follows). */
  treArgs?: string[];
  /** After a rebuild: new keys for shards whose keys are sealed to another measurement (old stores moved aside). */
  reprovision?: boolean;
  /** The shards' and NATS servers' log lines, each prefixed with its source, at `logLevel` and above. */
  log?: (line: string) => void;
  /** A pino level name (default info); the shards themselves log at their measured --log-level. */
  logLevel?: string;
  /** One line per step while the cluster starts, and when a TRE exits or takes a shard over. */
  progress?: (line: string) => void;
  /** How long each shard may take to listen (default 120 s: a measured start hashes the release). */
  startTimeoutMs?: number;
  /** Aborting stops what was started and rejects with code ABORTED. */
  signal?: AbortSignal;
}

/** A shard: its primary at start (`tre start --cluster --shard <name>`), and its standbys. */
export interface DevShard extends DevTre {
  /** Its other TREs, s1-b, s1-c, ... (none without `standbys`). */
  standbys: DevTre[];
  /** Its MQTT endpoints in failover order, the primary's first (a meter agent's `tre.endpoints`). */
  endpoints: string[];
  /** The TRE that serves the shard now (after a takeover, a standby); undefined while none does. */
  current(): DevTre | undefined;
}

export interface DevCluster {
  shards: DevShard[];
  /** With standbys: the TTL of the shards' leases (ms). */
  leaseTtlMs?: number;
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
  /** Stops the standbys, then the primaries (SIGTERM, then waits), then NATS, then the software TPMs. */
  stop(): Promise<void>;
}

const DEFAULTS = {
  shards: 3,
  standbys: 0,
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
} as const;

/** Standbys are named for their shard with a letter: s1-b, s1-c, ... */
const STANDBY_LETTERS = 'bcdefghi';

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

/** nats-server's `[INF]`, `[WRN]` ... as a pino level: its routine lines count as debug here. */
export function natsLineLevel(line: string): number {
  if (/\[(ERR|FTL)\]/.test(line)) return LOG_LEVELS.error!;
  if (/\[WRN\]/.test(line)) return LOG_LEVELS.warn!;
  if (/\[(DBG|TRC)\]/.test(line)) return LOG_LEVELS.trace!;
  return LOG_LEVELS.debug!;
}

/** The TREs of shard `shard`: itself, then its standbys `s1-b`, `s1-c`, ... (failover order). */
export function shardInstances(shard: string, standbys: number): string[] {
  return [shard, ...[...STANDBY_LETTERS.slice(0, standbys)].map((letter) => `${shard}-${letter}`)];
}

function checkOptions(o: typeof DEFAULTS & DevClusterOptions): void {
  const count = (v: number, what: string, min: number, max: number) => {
    if (!Number.isInteger(v) || v < min || v > max)
      throw new DevClusterError(
        'INVALID_ARGUMENT',
        `${what} must be a whole number from ${min} to ${max}, got ${v}`,
      );
  };
  count(o.shards, 'shards', 1, 64);
  count(o.standbys, 'standbys', 0, STANDBY_LETTERS.length);
  count(o.natsNodes, 'natsNodes', 1, 9);
  const tres = o.shards * (1 + o.standbys);
  if (!Number.isInteger(o.basePort) || o.basePort < 0 || o.basePort + tres - 1 > 65_535)
    throw new DevClusterError(
      'INVALID_ARGUMENT',
      `basePort must be 0 (free ports) or a port with room for ${tres} after it, got ${o.basePort}`,
    );
  if (o.leaseTtlMs !== undefined) {
    if (o.standbys === 0)
      throw new DevClusterError(
        'INVALID_ARGUMENT',
        'a lease TTL needs standbys: give --standbys 1 or more (without standbys a shard has no journal and no lease)',
      );
    count(o.leaseTtlMs, 'the lease TTL (ms)', 1_000, 3_600_000);
  }
  if (!(o.logLevel in LOG_LEVELS))
    throw new DevClusterError(
      'INVALID_ARGUMENT',
      `log level ${o.logLevel}: one of ${Object.keys(LOG_LEVELS).join(', ')}`,
    );
}

export async function startDevCluster(opts: DevClusterOptions): Promise<DevCluster> {
  const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
  const o = { ...DEFAULTS, ...(given as DevClusterOptions) } as typeof DEFAULTS & DevClusterOptions;
  checkOptions(o);
  const dir = resolve(o.dir);
  const names = Array.from({ length: o.shards }, (_, i) => `s${i + 1}`);
  // Every TRE, primaries first (s1..sN), then the first standby of each shard, and so on.
  const tres = Array.from({ length: 1 + o.standbys }, (_, j) =>
    names.map((shard) => ({ name: shardInstances(shard, o.standbys)[j]!, shard, standby: j > 0 })),
  ).flat();
  const { settings, config } = shardConfiguration(o.treArgs);
  const minLevel = LOG_LEVELS[o.logLevel]!;
  const checkAborted = () => {
    if (o.signal?.aborted)
      throw new DevClusterError('ABORTED', 'the start was interrupted; stopped what had started');
  };
  // Stopped in reverse order when the start fails, and by stop(): standbys, primaries, NATS, swtpm.
  const started: Started[] = [];
  let stopping: Promise<void> | undefined;
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
    for (const t of tres) {
      checkAborted();
      o.progress(`${tre(t.name, t.shard)}: software TPM (state in ${shardPaths(dir, t.name).swtpm})`);
      const swtpm = await startSwtpm({ dir: shardPaths(dir, t.name).swtpm }).catch((err: Error) => {
        throw new DevClusterError(
          'SWTPM_FAILED',
          `${tre(t.name, t.shard)}'s software TPM did not start (${err.message}); install swtpm (scripts/setup.sh demo)`,
        );
      });
      started.push(swtpm);
      swtpms.push(swtpm);
    }
    for (const [i, t] of tres.entries()) {
      checkAborted();
      if (await endorseIfNeeded(ca, t.shard, swtpms[i]!.tcti, shardPaths(dir, t.name)))
        o.progress(`${tre(t.name, t.shard)}: attestation key endorsed by the regulator`);
    }
    const policy = whitelistOn(swtpms[0]!.tcti, shardPaths(dir, names[0]!), config, settings.bootPcrs);
    const pcr = policy.pcrValues[String(APPLICATION_PCR)]![0]!;
    const release = await readRelease(dir);
    for (const [i, t] of tres.entries()) {
      checkAborted();
      await sealKeys({
        ca,
        instance: t.name,
        shard: t.shard,
        tcti: swtpms[i]!.tcti,
        dir,
        policy,
        release,
        config,
        settings,
        o,
      });
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
    const leaseTtlMs = await shardJournals({ nats, admin, names, o });

    // Chosen here, not left to the shards (port 0): a shard logging above info never says which.
    const free = await freePorts(tres.length * ((o.basePort === 0 ? 1 : 0) + (settings.metrics ? 1 : 0)));
    const ports = tres.map((_, i) => (o.basePort === 0 ? free.shift()! : o.basePort + i));
    const metricsPorts = tres.map(() => (settings.metrics ? free.shift() : undefined));
    const launch = (i: number) => {
      const t = tres[i]!;
      const paths = shardPaths(dir, t.name);
      const args = [
        'start',
        '--cluster',
        ...o.treArgs,
        ...(settings.metrics ? ['--metrics-listen', `${HOST}:${metricsPorts[i]}`] : []),
        ...['--shard', t.shard, '--nats', nats.urls.join(','), '--shards', names.join(',')],
        ...(leaseTtlMs === undefined ? [] : ['--lease-ttl', String(leaseTtlMs)]),
        ...['--peer-policy', policyFile, '--tpm', swtpms[i]!.tcti],
        ...['--pki', paths.pki, '--data', paths.data, '--host', HOST, '--port', String(ports[i])],
      ];
      return launchTre({
        ...t,
        port: ports[i]!,
        metricsPort: metricsPorts[i],
        cli: releasePaths(dir).cli,
        args,
        tcti: swtpms[i]!.tcti,
        paths,
        minLevel,
        logsInfo: LOG_LEVELS[settings.logLevel]! <= LOG_LEVELS.info!,
        o,
      });
    };
    // The primaries first, so that each holds its shard's lease before its standbys start.
    const startGroup = async (indices: number[]) => {
      const launches = indices.map(launch);
      started.push({ stop: async () => void (await Promise.all(launches.map((l) => l.process.stop()))) });
      return Promise.all(launches.map((l) => l.ready));
    };
    const indices = tres.map((_, i) => i);
    checkAborted();
    o.progress(
      `shards: starting ${names.join(', ')} (each a measured start: it hashes the release, then joins NATS)`,
    );
    const primaries = await startGroup(indices.filter((i) => !tres[i]!.standby));
    for (const s of primaries) o.progress(`shard ${s.name}: listening on ${s.url} (pid ${s.pid})`);
    let standbys: DevTre[] = [];
    if (o.standbys > 0) {
      checkAborted();
      const which = tres.filter((t) => t.standby).map((t) => t.name);
      o.progress(
        `standbys: starting ${which.join(', ')} (they follow their shard's journal; no MQTT until one takes over)`,
      );
      standbys = await startGroup(indices.filter((i) => tres[i]!.standby));
      for (const s of standbys)
        o.progress(
          `${tre(s.name, s.shard)}: ${s.role === 'primary' ? `serving on ${s.url}` : `standing by (takes over on ${s.url})`} (pid ${s.pid})`,
        );
    }
    const shards = primaries.map((primary): DevShard => {
      const own = standbys.filter((s) => s.shard === primary.name);
      const all = [primary, ...own];
      const { role: _role, ...fields } = primary;
      return {
        ...fields,
        get role() {
          return primary.role;
        },
        standbys: own,
        endpoints: all.map((t) => t.url),
        current: () => all.find((t) => t.role === 'primary'),
      };
    });
    for (const shard of shards) watchFailover(shard, { ...o, leaseTtlMs }, () => stopping !== undefined);
    return {
      shards,
      leaseTtlMs,
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

const STREAM_NOT_FOUND = 10059;

/**
 * The shards' journal streams and lease buckets, made by the regulator as NATS admin when there
 * are standbys (R3 on 3 or more NATS servers, else R1); a lease bucket from an earlier run with
 * another TTL is given this one. Without standbys nothing is made, but journals an earlier run
 * made are used (a TRE of a shard with a journal runs with failover). Returns the lease TTL the
 * TREs are given, undefined without journals.
 */
async function shardJournals(a: {
  nats: NatsCluster;
  admin: IssuedFiles;
  names: string[];
  o: typeof DEFAULTS & DevClusterOptions;
}): Promise<number | undefined> {
  const { o } = a;
  const connection = await connect({
    servers: a.nats.urls,
    tls: {
      ca: await readFile(a.admin.ca, 'utf8'),
      cert: await readFile(a.admin.cert, 'utf8'),
      key: await readFile(a.admin.key, 'utf8'),
    },
  });
  try {
    const jsm = await jetstreamManager(connection);
    const info = (stream: string) =>
      jsm.streams.info(stream).catch((err: unknown) => {
        if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return undefined;
        throw err;
      });
    const journals = await Promise.all(a.names.map((s) => info(shardSubjects.journalStream(s))));
    for (const [i, journal] of journals.entries())
      if (journal && journal.config.num_replicas > o.natsNodes)
        throw new DevClusterError(
          'INVALID_ARGUMENT',
          `shard ${a.names[i]}'s journal (made by an earlier run in ${resolve(o.dir)}) is replicated on ${journal.config.num_replicas} NATS servers, more than the ${o.natsNodes} asked for: start with --nats-nodes ${journal.config.num_replicas}, or use another --dir`,
        );
    const leaseStream = (shard: string) => `KV_${shardSubjects.leaseBucket(shard)}`;
    if (o.standbys === 0) {
      const made = a.names.filter((_, i) => journals[i] !== undefined);
      if (made.length === 0) return undefined;
      const ttl = (await info(leaseStream(made[0]!)))?.config.max_age;
      const leaseTtlMs = ttl ? Math.round(ttl / 1e6) : DEFAULT_LEASE_TTL_MS;
      o.progress(
        `NATS: ${made.join(', ')} ${made.length === 1 ? 'has a journal' : 'have journals'} from an earlier run with standbys: ${made.length === 1 ? 'it runs' : 'they run'} with failover (lease TTL ${leaseTtlMs} ms), without standbys`,
      );
      return leaseTtlMs;
    }
    const leaseTtlMs = o.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    const replicas = o.natsNodes >= 3 ? 3 : 1;
    o.progress(
      `NATS: the regulator (admin) ${journals.every(Boolean) ? 'keeps' : 'makes'} each shard's journal stream and lease bucket (R${replicas}, lease TTL ${leaseTtlMs} ms)`,
    );
    await ensureShardStreams(jsm, a.names, { replicas, leaseTtlMs });
    for (const [i, shard] of a.names.entries())
      if (!journals[i] && existsSync(join(shardPaths(resolve(o.dir), shard).data, 'tre.sqlite')))
        o.progress(
          `shard ${shard}: its store holds what earlier runs without standbys stored; its standbys get only what it journals from now on (the journal has no snapshot yet)`,
        );
    for (const shard of a.names) {
      const bucket = (await info(leaseStream(shard)))!;
      if (bucket.config.max_age !== nanos(leaseTtlMs)) {
        o.progress(
          `NATS: shard ${shard}'s lease TTL was ${Math.round(bucket.config.max_age / 1e6)} ms (an earlier run): now ${leaseTtlMs} ms`,
        );
        await jsm.streams.update(leaseStream(shard), { max_age: nanos(leaseTtlMs) });
      }
    }
    return leaseTtlMs;
  } finally {
    await connection.close().catch(() => {});
  }
}

/**
 * Reports each TRE of the shard that exits while the cluster runs: a primary's death, and which
 * standby takes over (then that it did, and how long after); a standby's. Nothing is restarted.
 */
function watchFailover(
  shard: DevShard,
  o: { progress: (line: string) => void; leaseTtlMs?: number },
  stopping: () => boolean,
): void {
  const all: DevTre[] = [shard, ...shard.standbys];
  const initial = all.find((t) => t.role === 'primary');
  let current = initial;
  let diedAt: { name: string; at: number } | undefined;
  const ttl = `${(o.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS) / 1000} s`;
  for (const t of all) {
    void t.serving.then(({ takeoverMs }) => {
      current = t;
      if (t === initial || stopping()) return;
      const after = diedAt
        ? `${Math.round(performance.now() - diedAt.at)} ms after ${diedAt.name} exited; `
        : '';
      const taking = takeoverMs === undefined ? '' : `, ${Math.round(takeoverMs)} ms from taking the lease`;
      o.progress(
        `${shard.name}: standby ${t.name} took over, serving on ${t.url} (${after}lease TTL ${ttl}${taking})`,
      );
    });
    void t.exited.then((code) => {
      if (stopping()) return;
      const how = code === null ? 'killed by a signal' : `status ${code}`;
      const left = all.filter((s) => s !== t && s.role === 'standby');
      const names = left.map((s) => s.name).join(', ');
      if (current === t) {
        current = undefined;
        diedAt = { name: t.name, at: performance.now() };
        const who = t.name === shard.name ? `${shard.name} primary` : `${shard.name} primary ${t.name}`;
        o.progress(
          left.length === 0
            ? `${who} exited (${how}); ${all.length === 1 ? 'it has no standby (--standbys)' : 'no standby left'}: shard ${shard.name} is down (nothing is restarted: Ctrl-C and start \`tre cluster\` again)`
            : `${who} exited (${how}); ${left.length === 1 ? 'standby' : 'one of its standbys'} ${names} takes over (once its lease expires: TTL ${ttl})`,
        );
      } else if (all.length > 1)
        o.progress(
          `${tre(t.name, shard.name)} exited (${how}); ${left.length === 0 ? 'no standby left' : `standbys left: ${names}`} (nothing is restarted)`,
        );
    });
  }
}

/** A client certificate of this CA, issued unless one is there. */
async function reusedClient(ca: CertificateAuthority, role: 'regulator', id: string): Promise<IssuedFiles> {
  const files = ca.paths.client(role, id);
  const cert = await readFile(files.cert, 'utf8').catch(() => undefined);
  if (cert && existsSync(files.key) && certifiedBy(cert, ca)) return { ...files, ca: ca.paths.caCert };
  return ca.issue(role, id, { force: true });
}
