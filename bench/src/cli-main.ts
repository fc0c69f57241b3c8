/** `npm run bench -- <name> [--json]`: one command per benchmark, each with its baseline in the same run. */
import { Command, CommanderError } from 'commander';
import { runAttest } from './attest.js';
import { runConnections } from './connections.js';
import { DEFAULT_DP_UTILITY, runDpUtility } from './dp-utility.js';
import { runDrRound } from './dr-round.js';
import { runIngest } from './ingest.js';
import { runReconnect } from './reconnect.js';
import { type BenchResult, formatTable, jsonOf } from './report.js';
import { DEFAULT_SHARDS, runShards } from './shards.js';
import { runSoak } from './soak.js';

const int = (v: string) => Number.parseInt(v, 10);

function output(result: BenchResult, json: boolean): void {
  if (json) console.log(JSON.stringify(jsonOf(result), null, 2));
  else console.log(formatTable(result));
}

export function buildProgram(): Command {
  const program = new Command('tre-bench')
    .description('TRE benchmarks; each starts what it needs and runs its baseline in the same run')
    .exitOverride();
  program
    .command('ingest')
    .description('durable QoS1 readings/s over mTLS and publish-to-PUBACK latency, TRE vs mosquitto')
    .option('--meters <n>', 'meter connections', int, 200)
    .option('--per-meter <n>', 'readings per meter (measured)', int, 100)
    .option('--window <n>', 'QoS1 publishes in flight per connection', int, 4)
    .option('--json', 'print JSON')
    .action(async (o: { meters: number; perMeter: number; window: number; json?: boolean }) => {
      output(await runIngest(o, (l) => console.error(`ingest: ${l}`)), !!o.json);
    });
  program
    .command('dp-utility')
    .description(
      'relative error of released totals vs group size and epsilon, against the analytic expectation',
    )
    .option('--trials <n>', 'intervals per cell', int, DEFAULT_DP_UTILITY.trials)
    .option('--json', 'print JSON')
    .action((o: { trials: number; json?: boolean }) => {
      output(runDpUtility({ ...DEFAULT_DP_UTILITY, trials: o.trials }), !!o.json);
    });
  program
    .command('attest')
    .description(
      'verified attestations/s with nonce batching vs one quote per request, and quote latency (swtpm)',
    )
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      output(await runAttest(undefined, (l) => console.error(`attest: ${l}`)), !!o.json);
    });
  program
    .command('dr-round')
    .description('deadline -> pseudo-bids and acceptance -> notifications + credits, 10,000 and 100,000 bids')
    .option('--sizes <list>', 'comma-separated bid counts', '10000,100000')
    .option('--json', 'print JSON')
    .action(async (o: { sizes: string; json?: boolean }) => {
      output(
        await runDrRound(o.sizes.split(',').map(Number), (l) => console.error(`dr-round: ${l}`)),
        !!o.json,
      );
    });
  program
    .command('connections')
    .description('concurrent mTLS sessions held, handshakes/s and memory per session, TRE vs mosquitto')
    .option('--sessions <n>', 'sessions (stay below the 20,000 open files per process)', int, 15_000)
    .option('--generators <n>', 'load-generator processes', int, 4)
    .option(
      '--split-sessions <n>',
      'idle sessions for the memory split by heap snapshot (0: none)',
      int,
      1000,
    )
    .option('--json', 'print JSON')
    .action(async (o: { sessions: number; generators: number; splitSessions: number; json?: boolean }) => {
      if (o.sessions > 19_000)
        throw new Error('--sessions must stay below the 20,000 open-file limit of a process');
      output(await runConnections(o, (l) => console.error(`connections: ${l}`)), !!o.json);
    });
  program
    .command('reconnect')
    .description(
      'restart the TRE (swtpm) under connected agents with an hour of queued readings each: time until all re-attested and every backlog committed, vs mosquitto (TLS only)',
    )
    .option('--agents <n>', 'meter agents (the real agent code)', int, 5_000)
    .option('--generators <n>', 'load-generator processes holding the agents', int, 4)
    .option('--down <s>', 'keep each broker down at least this many seconds', Number, 0)
    .option('--timeout <s>', 'give up after this many seconds', int, 1_800)
    .option('--no-baseline', 'skip the mosquitto baseline')
    .option('--json', 'print JSON')
    .action(
      async (o: {
        agents: number;
        generators: number;
        down: number;
        timeout: number;
        baseline: boolean;
        json?: boolean;
      }) => {
        if (!(o.agents > 0) || !(o.generators > 0))
          throw new Error('--agents and --generators must be positive');
        // A generator holds a socket and an open outbox journal per agent.
        if (Math.ceil(o.agents / o.generators) > 8_000)
          throw new Error(
            'more than 8,000 agents per generator: raise --generators (20,000 open files per process)',
          );
        output(
          await runReconnect(
            {
              agents: o.agents,
              generators: o.generators,
              downSeconds: o.down,
              timeoutSeconds: o.timeout,
              baseline: o.baseline,
            },
            (l) => console.error(`reconnect: ${l}`),
          ),
          !!o.json,
        );
      },
    );
  program
    .command('shards')
    .description(
      'TRE shard processes (tre cluster) vs one TRE without a cluster: ingest readings/s and attestations/s for 1, 2, 3 shards, and a cross-shard DR round',
    )
    .option('--shard-counts <list>', 'comma-separated shard counts', DEFAULT_SHARDS.shardCounts.join(','))
    .option('--meters <n>', 'meter connections', int, DEFAULT_SHARDS.meters)
    .option('--per-meter <n>', 'readings per meter (measured)', int, DEFAULT_SHARDS.perMeter)
    .option('--window <n>', 'QoS1 publishes in flight per connection', int, DEFAULT_SHARDS.window)
    .option(
      '--attest-seconds <s>',
      'how long the attestation load runs per configuration',
      int,
      DEFAULT_SHARDS.attestSeconds,
    )
    .option(
      '--dr-bids <list>',
      'comma-separated bid counts of the DR round (empty: none)',
      DEFAULT_SHARDS.drBids.join(','),
    )
    .option('--dr-shards <n>', 'shards of the DR round', int, DEFAULT_SHARDS.drShards)
    .option('--json', 'print JSON')
    .action(
      async (o: {
        shardCounts: string;
        meters: number;
        perMeter: number;
        window: number;
        attestSeconds: number;
        drBids: string;
        drShards: number;
        json?: boolean;
      }) => {
        const counts = (v: string) => v.split(',').filter(Boolean).map(Number);
        const shardCounts = counts(o.shardCounts);
        const drBids = counts(o.drBids);
        if (
          ![...shardCounts, ...drBids, o.drShards, o.meters, o.perMeter].every(
            (n) => Number.isInteger(n) && n > 0,
          )
        )
          throw new Error(
            '--shard-counts, --dr-bids, --dr-shards, --meters and --per-meter take positive whole numbers',
          );
        output(
          await runShards({ ...o, shardCounts, drBids }, (l) => console.error(`shards: ${l}`)),
          !!o.json,
        );
      },
    );
  program
    .command('soak')
    .description(
      'the whole simulation for many days: RSS, live heap and handles per day, and heap growth by owner (TRE, agents, simulator)',
    )
    .option('--households <n>', 'simulated households', int, 1000)
    .option('--days <n>', 'simulated days (at least 3)', int, 30)
    .option('--speed <x>', 'at most this many simulated seconds per real second', int, 100_000)
    .option('--json', 'print JSON')
    .action(async (o: { households: number; days: number; speed: number; json?: boolean }) => {
      output(await runSoak(o, (l) => console.error(`soak: ${l}`)), !!o.json);
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    console.error(`tre-bench: ${(err as Error).message}`);
    return 1;
  }
}
