/** `tre start`: run the TRE broker until SIGTERM or Ctrl-C. */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { takeStopSignals } from '@tre/hardware';
import {
  AcceleratedClock,
  type AttestationPolicy,
  attestationPolicySchema,
  checkShard,
  systemClock,
  verifyContent,
} from '@tre/protocol';
import { type Command, CommanderError, InvalidArgumentError } from 'commander';
import { DEFAULT_LEASE_TTL_MS } from '../cluster/take-shard.js';
import { createLogger } from '../log.js';
import { type ListenAddress, parseListenAddress } from '../metrics/metrics-server.js';
import { pkiPaths } from '../pki/certificate-authority.js';
import { startTre, TreConfigError } from '../tre.js';
import { measuredConfigOf, type TreFlags, treSettingsFrom, withTreOptions } from './tre-options.js';

/** A clean stop (flows, broker, store, lease, journal) not done this long after SIGTERM exits with status 1. */
const STOP_BOUND_MS = 60_000;

interface StartFlags extends TreFlags {
  pki: string;
  data: string;
  host: string;
  port: number;
  tpm?: string;
  metricsListen?: ListenAddress;
  shard?: string;
  nats?: string[];
  shards?: string[];
  peerPolicy?: string;
  leaseTtl?: number;
}

const list = (v: string) =>
  v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

function shardName(v: string): string {
  try {
    return checkShard(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** The regulator-signed whitelist the other shards must satisfy, checked against the regulator root. */
async function peerPolicy(file: string, caFile: string): Promise<AttestationPolicy> {
  const [jws, ca] = await Promise.all([
    readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new TreConfigError(
        `cannot read the peers' attestation policy ${file} (${err.code}): it is the regulator's whitelist (\`tre attest-policy\` with --cluster), the one the meter agents use`,
      );
    }),
    readFile(caFile, 'utf8'),
  ]);
  try {
    return await verifyContent(
      'attestationPolicy',
      jws.trim(),
      new X509Certificate(ca).publicKey,
      attestationPolicySchema,
    );
  } catch (err) {
    throw new TreConfigError(
      `${file} is not a whitelist signed by the regulator root ${caFile}: ${(err as Error).message}`,
    );
  }
}

function listenAddress(text: string): ListenAddress {
  try {
    return parseListenAddress(text);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

export function addStartCommand(program: Command): void {
  withTreOptions(
    program
      .command('start')
      .description('run the TRE broker (SIGTERM or Ctrl-C stops it gracefully)')
      .option(
        '--pki <dir>',
        "the TRE's certificate directory: ca.crt, crl.pem and tre.crt (signed from `tre enroll tls`)",
        './tre-pki',
      )
      .option('--data <dir>', 'data directory (encrypted SQLite store, sealed keys)', './tre-data')
      .option('--host <host>', 'address to listen on', '127.0.0.1')
      .option(
        '--port <port>',
        'port to listen on; 0 picks a free one (the log says which)',
        (v) => Number.parseInt(v, 10),
        8883,
      )
      .option(
        '--metrics-listen <host:port>',
        'with --metrics: serve /metrics (Prometheus), /healthz and /readyz over plain HTTP there',
        listenAddress,
        parseListenAddress('127.0.0.1:9464'),
      )
      .option(
        '--tpm <tcti>',
        'the TPM: device:/dev/tpmrm0 (Pi HAT) or swtpm:host=127.0.0.1,port=N; needs `tre enroll` done with the same options',
      )
      .option(
        '--shard <name>',
        "with --cluster: this TRE's shard (its certificate names it: urn:tre:tre:<name>)",
        shardName,
      )
      .option(
        '--nats <urls>',
        'with --cluster: the NATS servers, comma-separated (e.g. nats://127.0.0.1:4222)',
        list,
      )
      .option(
        '--shards <names>',
        'with --cluster: every shard of the cluster, comma-separated, the same on each',
        list,
      )
      .option(
        '--peer-policy <file>',
        "with --cluster: the regulator's signed whitelist the other shards' quotes must satisfy",
      )
      .option(
        '--lease-ttl <ms>',
        `with --cluster: the TTL of the shard's lease bucket, as the admin made it (default ${DEFAULT_LEASE_TTL_MS})`,
        (v) => Number.parseInt(v, 10),
      )
      .addHelpText(
        'after',
        `
Failover (--cluster, when an admin made the shard's journal stream and lease bucket): run the same
\`tre start --cluster --shard S ...\` for every TRE of shard S, each on its own machine and TPM. The one
that holds the shard's lease is its primary (it listens for MQTT and runs the flows); the others are
standbys that follow the shard's journal and take over when the primary stops renewing the lease.
The log says which role this TRE has and, after a takeover, how long it took. A primary that loses
its lease stops acknowledging and exits with status 1.

SIGTERM or Ctrl-C stops the TRE cleanly (the broker, then the store; a primary then releases its
lease) and it exits with status 0; a repeat while it stops is logged and ignored (SIGKILL stops it
at once), and a clean stop not done within ${STOP_BOUND_MS / 1000} s exits with status 1.`,
      ),
  ).action(async (o: StartFlags, command: Command) => {
    const settings = treSettingsFrom(o);
    const clusterFlags = (['shard', 'nats', 'shards', 'peerPolicy'] as const).filter(
      (k) => o[k] !== undefined,
    );
    if (!settings.cluster && clusterFlags.length > 0)
      throw new CommanderError(
        2,
        'tre.cluster',
        '--shard, --nats, --shards and --peer-policy need --cluster (being a shard is measured: give --cluster to tre enroll and tre attest-policy too)',
      );
    if (settings.cluster && clusterFlags.length < 4)
      throw new CommanderError(
        2,
        'tre.cluster',
        '--cluster needs --shard, --nats, --shards and --peer-policy (`tre cluster` starts a local cluster for development)',
      );
    if (!settings.metrics && command.getOptionValueSource('metricsListen') === 'cli')
      throw new CommanderError(
        2,
        'tre.metrics',
        '--metrics-listen needs --metrics (served metrics are measured: give --metrics to tre enroll and tre attest-policy too)',
      );
    const log = createLogger({ level: settings.logLevel });
    // Signals are taken from the start, so a stop during start-up is still graceful, and kept until
    // stopped, so a second one cannot kill the TRE half-way through closing its store.
    const signals = takeStopSignals({
      boundMs: STOP_BOUND_MS,
      say: (message, { kind, signal }) =>
        kind === 'overdue' ? log.error({ signal }, message) : log.warn({ signal }, message),
    });
    try {
      const standing = new AbortController();
      let stop: (why: string) => void = () => {};
      const stopped = new Promise<string>((resolve) => {
        stop = (why) => {
          standing.abort(new Error(why));
          resolve(why);
        };
      });
      signals.onSignal(stop);
      const tre = await startTre({
        pkiDir: o.pki,
        dataDir: o.data,
        host: o.host,
        port: o.port,
        log,
        metrics: settings.metrics ? o.metricsListen : undefined,
        cluster: settings.cluster
          ? {
              shard: o.shard!,
              shards: o.shards!,
              servers: o.nats!,
              peerPolicy: await peerPolicy(o.peerPolicy!, pkiPaths(o.pki).caCert),
              failover: {
                leaseTtlMs: o.leaseTtl,
                signal: standing.signal,
                onLeaseLost: (why) => {
                  process.exitCode = 1;
                  signals.stopping(`shard lease ${why}`);
                  stop(`shard lease ${why}`);
                },
              },
            }
          : undefined,
        monitoring: settings.monitoring,
        tpm: o.tpm ? { tcti: o.tpm, bootPcrs: settings.bootPcrs } : undefined,
        measuredConfig: measuredConfigOf(settings),
        clock:
          settings.clockSpeed === 1
            ? systemClock
            : new AcceleratedClock(settings.clockEpoch ?? Date.now(), settings.clockSpeed),
      }).catch((err: unknown) => {
        if (standing.signal.aborted) return undefined; // stopped while standing by
        throw err;
      });
      if (!tre) {
        log.info({ signal: await stopped }, 'stopped while standing by');
        return;
      }
      const signal = await stopped; // already settled if the signal came during start-up
      log.info({ signal }, 'stopping');
      await tre.stop().catch((err: Error) => log.error({ err }, 'unclean stop'));
    } finally {
      signals.dispose();
    }
  });
}
