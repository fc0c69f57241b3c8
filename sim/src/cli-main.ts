/** `tre-sim`: the simulator and the demo. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, createLogger, startTre } from '@tre/tre-broker';
import { Command, CommanderError } from 'commander';
import { Simulation } from './simulation/simulation.js';

export function buildProgram(): Command {
  const program = new Command('tre-sim')
    .description('simulated households and grid parties around a TRE')
    .exitOverride();
  program
    .command('demo')
    .description(
      'start a TRE with a fresh PKI in a temp dir and print how to connect (Ctrl-C stops and cleans up)',
    )
    .option('--port <port>', 'TRE port (0 = any free port)', (v) => Number.parseInt(v, 10), 8883)
    .option('--keep', 'keep the temp directory on exit')
    .action(async (o: { port: number; keep?: boolean }) => {
      const dir = await mkdtemp(join(tmpdir(), 'tre-demo-'));
      const pkiDir = join(dir, 'pki');
      const { ca } = await CertificateAuthority.init(pkiDir);
      const meter = await ca.issue('meter', 'demo-meter');
      const log = createLogger({ level: 'info' });
      const tre = await startTre({ pkiDir, dataDir: join(dir, 'data'), port: o.port, log });
      const tls = `--cafile ${meter.ca} --cert ${meter.cert} --key ${meter.key}`;
      console.log(`
TRE running on mqtts://127.0.0.1:${tre.port} (MQTT 3.1.1, mutual TLS). PKI: ${pkiDir}

Try it with mosquitto-clients:
  mosquitto_sub -h 127.0.0.1 -p ${tre.port} -V mqttv311 ${tls} -t 'tre/v1/meter/demo-meter/inbox/+' -v
  mosquitto_pub -h 127.0.0.1 -p ${tre.port} -V mqttv311 ${tls} -q 1 -t tre/v1/meter/demo-meter/reading -m '{"v":1}'
Issue more identities: node tre-broker/dist/cli.js pki issue --dir ${pkiDir} --role dno --id d1
Ctrl-C stops the TRE${o.keep ? '' : ' and removes the temp directory'}.`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await tre.stop();
      if (!o.keep) await rm(dir, { recursive: true, force: true });
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
    .option('--keep', 'keep the working directory')
    .option('--json', 'print the summary as JSON')
    .action(
      async (o: {
        households: number;
        days: number;
        speed: number;
        interval: number;
        keep?: boolean;
        json?: boolean;
      }) => {
        if (o.interval !== 15 && o.interval !== 30) throw new Error('--interval must be 15 or 30');
        const progress = (line: string) => console.error(`tre-sim: ${line}`);
        const sim = await Simulation.create({
          households: o.households,
          days: o.days,
          speed: o.speed,
          intervalMinutes: o.interval,
          keep: o.keep,
          progress,
        });
        let lastDay = -1;
        const start = sim.clock.now();
        try {
          const summary = await sim.run((t) => {
            const day = Math.floor((t - 1 - start) / 86_400_000);
            if (day !== lastDay)
              progress(`day ${day + 1}/${o.days} (${new Date(t).toISOString().slice(0, 16)})`);
            lastDay = day;
          });
          const peakRssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
          if (o.json) console.log(JSON.stringify({ ...summary, peakRssMiB }, null, 2));
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
