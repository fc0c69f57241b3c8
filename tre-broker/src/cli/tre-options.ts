/**
 * The options that decide how the TRE behaves: `tre start` runs with them, and the same options
 * given to `tre enroll tls`, `tre enroll reseal`, `tre measure` and `tre attest-policy` describe the
 * same measurement (every one of them is measured: see `measuredConfigOf`).
 */
import { type Command, CommanderError } from 'commander';
import { bootPcrsOf } from '../attestation/measurement.js';
import type { MonitoringOptions } from '../monitoring/monitoring-service.js';
import { pcrList } from './tpm.js';

export interface TreFlags {
  minGroupSize: number;
  epsilon: string;
  dailyBudget: number;
  rollingBudget: number;
  releaseMinutes: number;
  logLevel: string;
  clockSpeed: number;
  clockEpoch?: number;
  bootPcrs?: number[];
  metrics?: boolean;
  cluster?: boolean;
}

export interface TreSettings {
  monitoring: MonitoringOptions;
  logLevel: string;
  clockSpeed: number;
  clockEpoch?: number;
  bootPcrs: number[];
  /** Whether /metrics, /healthz and /readyz are served (where: `tre start --metrics-listen`). */
  metrics: boolean;
  /** Whether this TRE is one shard of a cluster (where and with whom: `tre start --shard --nats --shards`). */
  cluster: boolean;
}

export function withTreOptions(command: Command): Command {
  return command
    .option(
      '--min-group-size <n>',
      'smallest DNO aggregation group (never below 2)',
      (v) => Number.parseInt(v, 10),
      50,
    )
    .option('--epsilon <p/q>', 'privacy parameter of one aggregate release, as a fraction', '1/1')
    .option('--daily-budget <epsilon>', 'privacy budget per household per UTC day', Number, 100)
    .option(
      '--rolling-budget <epsilon>',
      'privacy budget per household over any 30 consecutive UTC days',
      Number,
      1_500,
    )
    .option(
      '--release-minutes <m>',
      'aggregate release interval: 15 or 30',
      (v) => Number.parseInt(v, 10),
      30,
    )
    .option('--log-level <level>', 'pino log level', process.env.TRE_LOG_LEVEL ?? 'info')
    .option(
      '--clock-speed <x>',
      'run the TRE clock x times faster than real time (demos and tests; no production whitelist accepts it)',
      Number,
      1,
    )
    .option(
      '--clock-epoch <ms>',
      'real instant (ms since epoch) from which the faster clock runs; the same value continues one timeline across restarts',
      Number,
    )
    .option(
      '--boot-pcrs <list>',
      'with --tpm on a machine with measured boot: quote these boot PCRs too and seal the keys to them (e.g. 0,1,2,3,4,5,6,7)',
      pcrList,
    )
    .option(
      '--metrics',
      'serve Prometheus /metrics, /healthz and /readyz (tre start --metrics-listen says where); measured, so the whitelist says whether a TRE may',
    )
    .option(
      '--cluster',
      "run as one shard of a cluster of TREs: exchange sealed partial sums, bid batches and the providers' messages with the other attested shards over NATS (tre start --shard, --nats, --shards say where); measured, so the whitelist says whether a TRE may",
    );
}

export function treSettingsFrom(o: TreFlags): TreSettings {
  const eps = /^(\d+)\/(\d+)$/.exec(o.epsilon);
  if (!eps)
    throw new CommanderError(2, 'tre.epsilon', `--epsilon must be a fraction such as 1/2 (got ${o.epsilon})`);
  if (o.releaseMinutes !== 15 && o.releaseMinutes !== 30)
    throw new CommanderError(2, 'tre.release', '--release-minutes must be 15 or 30');
  if (!(o.clockSpeed > 0))
    throw new CommanderError(2, 'tre.clock', `--clock-speed must be a positive number (got ${o.clockSpeed})`);
  return {
    monitoring: {
      minGroupSize: o.minGroupSize,
      epsilon: [Number(eps[1]), Number(eps[2])],
      dailyBudget: o.dailyBudget,
      rollingBudget: o.rollingBudget,
      releaseMinutes: o.releaseMinutes,
    },
    logLevel: o.logLevel,
    clockSpeed: o.clockSpeed,
    clockEpoch: o.clockEpoch,
    bootPcrs: bootPcrsOf(o.bootPcrs),
    metrics: o.metrics === true,
    cluster: o.cluster === true,
  };
}

/**
 * What the TRE measures as its configuration (the regulator's whitelist is made from the same):
 * everything but where it listens and where its files are. Served metrics are measured (their
 * totals leave the TRE unsigned), and so is being a shard (its households' partial sums and bids
 * leave it, sealed to attested shards); a TRE without either measures as before. Which shard, which
 * NATS servers and which peers are not measured: the peers are attested themselves.
 */
export const measuredConfigOf = (s: TreSettings): Record<string, unknown> => ({
  monitoring: s.monitoring,
  logLevel: s.logLevel,
  clockSpeed: s.clockSpeed,
  clockEpoch: s.clockEpoch,
  bootPcrs: s.bootPcrs,
  ...(s.metrics ? { metrics: true } : {}),
  ...(s.cluster ? { cluster: true } : {}),
});
