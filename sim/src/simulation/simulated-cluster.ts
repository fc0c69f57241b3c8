import { join } from 'node:path';
import { type Swtpm, startSwtpm, Tpm } from '@tre/hardware';
import type { ManualClock } from '@tre/protocol';
import {
  adminUser,
  CertificateAuthority,
  type IssuedFiles,
  natsServerTls,
  type RunningTre,
  shardUser,
  startNatsCluster,
  startTre,
} from '@tre/tre-broker';
import { shardNames } from './shard-placement.js';
import {
  provisionSimulatedTre,
  type SimulatedShard,
  type SimulatedTres,
  signedWhitelist,
  simulatedTreOptions,
} from './simulated-tre.js';

/** What every shard measures as its configuration (and the regulator whitelists): a shard is measured. */
/** Measured (and whitelisted): a shard, serving metrics (its traffic with the other shards, counted). */
const CLUSTER_TRE_CONFIG = { simulation: true, cluster: true, metrics: true };

/**
 * Waits between shards, in simulated time. Generous: the simulator runs its clock as fast as the
 * system keeps up, and both end early once every shard answered. The DR grace stays below the
 * half hour between the bid deadline and the DSM's acceptBy (dr-schedule.ts).
 */
const SHARD_GRACE = { monitoringMs: 60 * 60_000, demandResponseMs: 20 * 60_000 };

/** How many NATS servers carry the shards' messages. */
const NATS_NODES = 3;

export class ClusterSetupError extends Error {
  override readonly name = 'ClusterSetupError';
  readonly code = 'SWTPM_REQUIRED';
}

export interface ClusterOptions {
  households: number;
  shards: number;
  attestation?: boolean;
  logLevel?: string;
  /** Called once NATS runs, before any shard joins it (e.g. to record everything that crosses it). */
  onNats?: (nats: { urls: string[]; admin: IssuedFiles }) => Promise<void> | void;
}

export async function startSimulatedCluster(
  dir: string,
  clock: ManualClock,
  opts: ClusterOptions,
  progress: (line: string) => void,
): Promise<SimulatedTres> {
  if (opts.attestation === false)
    throw new ClusterSetupError(
      'a cluster of shards needs attestation (attestation: false is for a single TRE): each shard attests the others before sending them anything',
    );
  const names = shardNames(opts.shards);
  progress('regulator: creating the PKI');
  const { ca } = await CertificateAuthority.init(join(dir, 'pki'), { force: true });
  const regulatorFiles = await ca.issue('regulator', 'reg', { force: true });
  // Stopped in reverse order when set-up fails, and by stop(): TREs, then NATS, then swtpm.
  const started: { stop(): Promise<void> }[] = [];
  const stopAll = async () => {
    for (const s of started.splice(0).reverse()) await s.stop().catch(() => {});
  };
  try {
    progress(`cluster: starting ${names.length} software TPMs, one per shard`);
    const swtpms: Swtpm[] = [];
    for (const name of names) {
      const swtpm = await startSwtpm({ dir: join(dir, name, 'swtpm') }).catch((err: Error) => {
        throw new ClusterSetupError(
          `shard ${name} needs a software TPM (${err.message}): every shard of a cluster is attested; install swtpm (scripts/setup.sh demo) or run without --shards`,
        );
      });
      started.push(swtpm);
      swtpms.push(swtpm);
    }
    for (const [i, name] of names.entries()) {
      progress(`shard ${name}: making its TLS and data keys, sealed to its measurement (swtpm)`);
      await provisionSimulatedTre(ca, clock, {
        base: join(dir, name),
        treId: name,
        swtpm: swtpms[i],
        config: CLUSTER_TRE_CONFIG,
      });
    }
    // The regulator's whitelist, measured as on a reference device built like the shards: this
    // process with a TPM open (FAPI unloads the swtpm TCTI library when a context closes, and a
    // running shard keeps its own open, so it is measured).
    const reference = Tpm.open({
      tcti: swtpms[0]!.tcti,
      keystoreDir: join(dir, names[0]!, 'tre-data', 'tpm'),
    });
    const whitelist = await signedWhitelist(ca, CLUSTER_TRE_CONFIG, clock, 'simulation-cluster').finally(() =>
      reference.close(),
    );

    progress(`cluster: starting ${NATS_NODES} NATS servers (mutual TLS, one user per shard)`);
    const nats = await startNatsCluster({
      dir: join(dir, 'nats'),
      nodes: NATS_NODES,
      tls: await natsServerTls(ca, join(dir, 'nats-tls')),
      users: [...names.map(shardUser), adminUser('reg')],
    });
    started.push(nats);
    await opts.onNats?.({ urls: nats.urls, admin: regulatorFiles });

    const shards: SimulatedShard[] = [];
    for (const [i, name] of names.entries()) {
      progress(`shard ${name}: measured start, joining the cluster over NATS`);
      const base = simulatedTreOptions({
        base: join(dir, name),
        treId: name,
        ca,
        clock,
        swtpm: swtpms[i],
        households: opts.households,
        config: CLUSTER_TRE_CONFIG,
        logLevel: opts.logLevel,
      });
      const tre: RunningTre = await startTre({
        ...base,
        monitoring: { ...base.monitoring, shardGraceMs: SHARD_GRACE.monitoringMs },
        demandResponse: { shardGraceMs: SHARD_GRACE.demandResponseMs },
        cluster: { shard: name, shards: names, servers: nats.urls, peerPolicy: whitelist.policy },
        metrics: { host: '127.0.0.1', port: 0 },
      });
      started.push(tre);
      shards.push({ name, tre, swtpm: swtpms[i], url: `mqtts://127.0.0.1:${tre.port}` });
    }
    return { ca, shards, regulatorFiles, whitelist, nats, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
