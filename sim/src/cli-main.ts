/** `tre-sim`: the simulator and the demo. */
import { join } from 'node:path';
import { takeStopSignals } from '@tre/hardware';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { DashboardServer } from './dashboard/dashboard-server.js';
import { buildSnapshot } from './dashboard/snapshot-builder.js';
import { Simulation } from './simulation/simulation.js';

/**
 * SIGINT and SIGTERM from the start: before the simulation exists they are remembered (it is
 * stopped as soon as set-up ends), afterwards they stop it. Either way the caller's `finally`
 * stops swtpm and the agents and removes the temporary state; the exit code says which signal. A
 * repeat while stopping is said once and ignored (it cannot cut the clean-up short; SIGKILL can).
 */
function stopOnSignals(progress: (line: string) => void) {
  let stop: (() => void) | undefined;
  const signals = takeStopSignals({ say: progress });
  signals.onSignal((s) => {
    process.exitCode = s === 'SIGINT' ? 130 : 143;
    progress(stop ? `${s}: stopping` : `${s}: stopping when set-up ends`);
    stop?.();
  });
  return {
    get signalled() {
      return signals.signal !== undefined;
    },
    /** What stops the running simulation (called at once if a signal came during set-up). */
    onStop(fn: () => void) {
      stop = fn;
      if (signals.signal) fn();
    },
    dispose() {
      signals.dispose();
    },
  };
}

const SHARDS_HELP =
  'TRE shards: 1 runs one TRE; N > 1 runs a cluster of N attested TREs (s1..sN, each on its own swtpm) over a local 3-node NATS cluster, households spread over them in blocks (some DNO feeders span two shards), regulator and DSM on s1, DNO on s2, supplier on s3; needs swtpm and nats-server (scripts/setup.sh demo)';

function shardCount(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 16)
    throw new InvalidArgumentError('give a whole number of shards from 1 to 16');
  return n;
}

/** Where the TREs listen, one line per shard in a cluster. */
function treLines(sim: Simulation): string {
  if (sim.shards.length === 1)
    return `  TRE:        ${sim.url} (MQTT 3.1.1, mutual TLS; regulator PKI in ${join(sim.dir, 'pki')}, the TRE's certificate in ${join(sim.dir, 'tre-pki')})`;
  return [
    `  TRE shards: ${sim.shards.length} (MQTT 3.1.1, mutual TLS; regulator PKI in ${join(sim.dir, 'pki')}, each shard's certificate in ${join(sim.dir, '<shard>', 'tre-pki')})`,
    ...sim.shards.map((s) => `    ${s.name}: ${s.url}`),
    `  NATS:       ${sim.nats?.urls.join(', ')} (between the shards: sealed messages only)`,
  ].join('\n');
}

interface DemoFlags {
  households: number;
  speed: number;
  shards: number;
  port: number;
  keep?: boolean;
}

export function buildProgram(): Command {
  const program = new Command('tre-sim')
    .description('simulated households and grid parties around a TRE')
    .exitOverride();
  program
    .command('demo')
    .description(
      'the whole system on this machine: PKI, TRE, grid parties, households, and a live dashboard (Ctrl-C stops and cleans up)',
    )
    .option('--households <n>', 'simulated households', (v) => Number.parseInt(v, 10), 200)
    .option('--speed <x>', 'simulated seconds per real second', Number, 300)
    .option('--shards <n>', SHARDS_HELP, shardCount, 1)
    .option(
      '--port <port>',
      'dashboard port on 127.0.0.1 (0 = any free port)',
      (v) => Number.parseInt(v, 10),
      8080,
    )
    .option('--keep', 'keep the working directory (PKI, TRE database) on exit')
    .action(async (o: DemoFlags) => {
      const progress = (line: string) => console.error(`demo: ${line}`);
      const signals = stopOnSignals(progress);
      try {
        const sim = await Simulation.create({
          households: o.households,
          days: 365,
          speed: o.speed,
          shards: o.shards,
          keep: o.keep,
          // A DR round and a billing period close within the first simulated hours.
          earlyRounds: true,
          progress,
        });
        const dashboard = await DashboardServer.start(o.port).catch(async (err: Error) => {
          await sim.stop();
          throw new Error(`cannot serve the dashboard on port ${o.port} (${err.message}); try --port 0`);
        });
        const timer = setInterval(() => dashboard.publish(buildSnapshot(sim, o.speed)), 500);
        console.log(`
TRE demo running: ${o.households} households at ${o.speed}x real time.
  dashboard:  ${dashboard.url}
${treLines(sim)}
Ctrl-C stops everything${o.keep ? ` (keeping ${sim.dir})` : ' and removes the temporary state'}.`);
        signals.onStop(() => sim.stopRunning());
        try {
          await sim.run();
        } finally {
          clearInterval(timer);
          await dashboard.close();
          await sim.stop();
          progress('stopped');
        }
      } finally {
        signals.dispose();
      }
    });

  program
    .command('run')
    .description(
      'headless simulation: N households for D days, then a summary with invariants checked from outside the TRE',
    )
    .option('--households <n>', 'simulated households', (v) => Number.parseInt(v, 10), 200)
    .option('--days <n>', 'simulated days', Number, 1)
    .option('--speed <x>', 'at most this many simulated seconds per real second', Number, 10_000)
    .option('--interval <minutes>', 'meter interval: 15 or 30', (v) => Number.parseInt(v, 10), 15)
    .option('--shards <n>', SHARDS_HELP, shardCount, 1)
    .option('--keep', 'keep the working directory')
    .option('--json', 'print the summary as JSON')
    .action(
      async (o: {
        households: number;
        days: number;
        speed: number;
        interval: number;
        shards: number;
        keep?: boolean;
        json?: boolean;
      }) => {
        if (o.interval !== 15 && o.interval !== 30) throw new Error('--interval must be 15 or 30');
        const progress = (line: string) => console.error(`tre-sim: ${line}`);
        const signals = stopOnSignals(progress);
        const sim = await Simulation.create({
          households: o.households,
          days: o.days,
          speed: o.speed,
          intervalMinutes: o.interval,
          shards: o.shards,
          keep: o.keep,
          progress,
        }).catch((err: unknown) => {
          signals.dispose();
          throw err;
        });
        let lastDay = -1;
        const memory: { day: number; rssMiB: number; handles: number }[] = [];
        const start = sim.clock.now();
        signals.onStop(() => sim.stopRunning());
        try {
          if (signals.signalled) return;
          const summary = await sim.run((t) => {
            const day = Math.floor((t - 1 - start) / 86_400_000);
            if (day !== lastDay) {
              const rss = Math.round(process.memoryUsage().rss / 2 ** 20);
              const handles = process.getActiveResourcesInfo().length;
              memory.push({ day: day + 1, rssMiB: rss, handles });
              progress(
                `day ${day + 1}/${o.days} (${new Date(t).toISOString().slice(0, 16)}): RSS ${rss} MiB, ${handles} active handles`,
              );
            }
            lastDay = day;
          });
          if (signals.signalled) {
            progress(`interrupted at ${new Date(sim.clock.now()).toISOString().slice(0, 16)}: no summary`);
            return;
          }
          const peakRssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
          if (o.json) console.log(JSON.stringify({ ...summary, peakRssMiB, memory }, null, 2));
          else {
            console.log(
              `${summary.households} households, ${summary.days} days simulated in ${summary.wallSeconds.toFixed(1)} s (peak RSS ${peakRssMiB} MiB)`,
            );
            for (const inv of summary.invariants)
              console.log(`${inv.holds ? 'OK  ' : 'FAIL'} ${inv.name}: ${inv.detail}`);
          }
          if (summary.invariants.some((i) => !i.holds)) process.exitCode = 1;
        } finally {
          await sim.stop();
          signals.dispose();
        }
      },
    );
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    console.error(`tre-sim: ${(err as Error).message}`);
    return 1;
  }
}
