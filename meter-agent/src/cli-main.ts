/** `meter-agent`: the household agent's command line. */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { IntervalAccumulator, MeterReader, systemSerialBinding } from '@tre/hardware';
import { ManualClock, systemClock } from '@tre/protocol';
import { Command, CommanderError } from 'commander';
import { loadAgentConfig } from './agent-config.js';
import { runAgent } from './agent-daemon.js';
import { sendControl } from './control-socket.js';
import { createRequest, installCertificate } from './device-identity.js';
import { replay } from './meter-replay.js';
import { Outbox } from './outbox.js';
import { loadAttestationPolicy, tpmQuoteAttestor } from './tre-attestor.js';
import { TreLink } from './tre-link.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const DEFAULT_CONFIG = '/etc/meter-agent/agent.yaml';

export function buildProgram(): Command {
  const program = new Command('meter-agent')
    .description(
      'household smart-meter agent: reads the meter, sends readings to an attested TRE, bids in demand response',
    )
    .version(pkg.version)
    .exitOverride()
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  meter-agent provision request --meter m-0001 --key device.key --csr device.csr
  meter-agent provision install --meter m-0001 --key device.key --cert signed.crt --ca ca.crt --out device.crt
  meter-agent attest --tre mqtts://tre.local:8883 --cert device.crt --key device.key --ca ca.crt --policy attestation-policy.jws
  meter-agent run --config ${DEFAULT_CONFIG}
  meter-agent status
  meter-agent bids list && meter-agent bids approve <bidId>`,
    );

  program
    .command('run')
    .description('run the agent: read the meter, send to the attested TRE, bid by the household policy')
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG)
    .action(async (o: { config: string }) => {
      const running = await runAgent(loadAgentConfig(o.config));
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', () => resolve());
        process.once('SIGINT', () => resolve());
      });
      await running.stop();
    });

  program
    .command('read')
    .description('print parsed telegrams and interval energy from a meter port or a capture file')
    .option('--replay <file>', 'a capture of the meter’s serial bytes')
    .option('--port <path>', 'a live serial port, e.g. /dev/ttyUSB0 (Ctrl-C stops)')
    .option(
      '--baud <rate>',
      'baud rate (DSMR 4/5: 115200; DSMR 2.2/3: 9600 with --seven-e-one)',
      (v) => Number.parseInt(v, 10),
      115_200,
    )
    .option('--seven-e-one', '7 data bits, even parity (DSMR 2.2/3)')
    .option('--interval <minutes>', '15 or 30', (v) => Number.parseInt(v, 10), 15)
    .option('--json', 'print JSON')
    .action(
      async (o: {
        replay?: string;
        port?: string;
        baud: number;
        sevenEOne?: boolean;
        interval: number;
        json?: boolean;
      }) => {
        if (!o.replay === !o.port)
          throw new CommanderError(2, 'agent.read', 'give either --replay FILE or --port PATH');
        const minutes = o.interval === 30 ? 30 : 15;
        if (o.replay) {
          const r = replay(readFileSync(o.replay), minutes);
          if (o.json) return console.log(JSON.stringify(r, null, 2));
          for (const t of r.telegrams)
            console.log(
              `${t.timestamp ?? '(no time)'}  import ${t.importWh} Wh  export ${t.exportWh} Wh${t.powerImportW !== undefined ? `  ${t.powerImportW} W` : ''}${t.crcChecked ? '  CRC ok' : ''}`,
            );
          for (const x of r.rejected) console.log(`rejected: ${x.reason} (${x.detail})`);
          for (const i of r.intervals)
            console.log(
              `interval ${i.intervalStart} ${i.intervalMinutes} min: ${i.importWh} Wh in, ${i.exportWh} Wh out${i.gap ? ` (closes a gap of ${i.gap.intervals} intervals)` : ''}`,
            );
          console.log(
            `${r.telegrams.length} telegrams, ${r.rejected.length} rejected, ${r.noiseBytes} noise bytes, ${r.intervals.length} intervals`,
          );
          return;
        }
        const reader = new MeterReader({
          path: o.port!,
          baudRate: o.baud,
          dataBits: o.sevenEOne ? 7 : 8,
          parity: o.sevenEOne ? 'even' : 'none',
          binding: await systemSerialBinding(),
          clock: systemClock,
        });
        const acc = new IntervalAccumulator(minutes);
        reader.on('telegram', (t) => {
          console.log(
            o.json ? JSON.stringify(t) : `${t.timestamp}  import ${t.importWh} Wh  export ${t.exportWh} Wh`,
          );
          if (t.timestamp)
            for (const i of acc.push({
              at: Date.parse(t.timestamp),
              importWh: t.importWh,
              exportWh: t.exportWh,
            }))
              console.log(o.json ? JSON.stringify(i) : `interval ${i.intervalStart}: ${i.importWh} Wh`);
        });
        reader.on('rejected', (reason, detail) => console.error(`rejected: ${reason} (${detail})`));
        reader.on('state', (state, detail) => console.error(`port ${state}${detail ? `: ${detail}` : ''}`));
        reader.start();
        await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
        await reader.stop();
      },
    );

  program
    .command('status')
    .description(
      'trust state, last reading, outbox depth, running bill, open events (from the running agent)',
    )
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG)
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const config = loadAgentConfig(o.config);
      const status = readStatus(config.stateDir);
      if (o.json) return console.log(JSON.stringify(status, null, 2));
      console.log(`TRE trust:      ${status.trust}`);
      console.log(
        `last interval:  ${status.lastInterval ? `${status.lastInterval.intervalStart} (${status.lastInterval.importWh} Wh)` : 'none yet'}`,
      );
      console.log(`outbox depth:   ${status.outboxDepth}`);
      console.log(
        `running bill:   ${status.runningBill ? `${status.runningBill.totalMinor} ${status.runningBill.currency} minor units since ${status.runningBill.periodStart}` : 'none yet'}`,
      );
      console.log(`open DR events: ${status.openEvents.length ? status.openEvents.join(', ') : 'none'}`);
      console.log(`as of:          ${status.updatedAt}`);
    });

  const bids = program
    .command('bids')
    .description('demand-response proposals (ask-first mode holds them for you)');
  bids
    .command('list')
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG)
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const proposals = readStatus(loadAgentConfig(o.config).stateDir).proposals;
      if (o.json) return console.log(JSON.stringify(proposals, null, 2));
      if (proposals.length === 0) return console.log('no proposals');
      for (const p of proposals)
        console.log(
          `${p.bidId}  event ${p.eventId}  ${p.quantityWh} Wh at ${p.pricePerMWh}/MWh  ${p.status}`,
        );
    });
  for (const cmd of ['approve', 'decline'] as const) {
    bids
      .command(`${cmd} <bidId>`)
      .description(`${cmd} a proposed bid`)
      .option('--config <file>', 'agent configuration', DEFAULT_CONFIG)
      .action(async (bidId: string, o: { config: string }) => {
        const answer = await sendControl(join(loadAgentConfig(o.config).stateDir, 'control.sock'), {
          cmd,
          bidId,
        });
        if (!answer.ok) throw new Error(answer.error);
        console.log(`${cmd}d ${bidId}`);
      });
  }

  const provision = program
    .command('provision')
    .description('device identity: the key is made here and never leaves the device');
  provision
    .command('request')
    .description('create the device key (if absent) and a certificate request for the regulator')
    .requiredOption('--meter <id>', 'meter id')
    .requiredOption('--key <file>', 'device private key (created 0600 if absent)')
    .requiredOption('--csr <file>', 'where to write the request')
    .action(async (o: { meter: string; key: string; csr: string }) => {
      await createRequest(o.meter, o.key, o.csr);
      console.log(
        `${o.csr}: give it to the regulator: tre pki sign-csr --csr ${o.csr} --role meter --id ${o.meter} --out device.crt`,
      );
    });
  provision
    .command('install')
    .description('check and install the signed certificate')
    .requiredOption('--meter <id>', 'meter id')
    .requiredOption('--key <file>', 'device private key')
    .requiredOption('--cert <file>', 'certificate signed by the regulator')
    .requiredOption('--ca <file>', 'regulator root certificate')
    .requiredOption('--out <file>', 'where to install the certificate')
    .action(async (o: { meter: string; key: string; cert: string; ca: string; out: string }) => {
      await installCertificate(
        o.meter,
        o.key,
        await readFile(o.cert, 'utf8'),
        await readFile(o.ca, 'utf8'),
        o.out,
      );
      console.log(`installed ${o.out}`);
    });

  program
    .command('attest')
    .description('attest a TRE and print the verdict (exit 0 only if trusted)')
    .requiredOption('--tre <url>', 'mqtts://host:port')
    .requiredOption('--meter <id>', 'meter id of the certificate')
    .requiredOption('--cert <file>', 'client certificate')
    .requiredOption('--key <file>', 'client key')
    .requiredOption('--ca <file>', 'regulator root certificate')
    .requiredOption('--policy <file>', 'regulator-signed attestation whitelist (JWS)')
    .option('--json', 'print JSON')
    .action(
      async (o: {
        tre: string;
        meter: string;
        cert: string;
        key: string;
        ca: string;
        policy: string;
        json?: boolean;
      }) => {
        const ca = await readFile(o.ca, 'utf8');
        const policy = await loadAttestationPolicy(await readFile(o.policy, 'utf8'), ca);
        let verdict: { trusted: boolean; check?: string; reason?: string } = {
          trusted: false,
          check: 'connect',
          reason: 'no connection',
        };
        const attestor = tpmQuoteAttestor({ regulatorRootPem: ca, policy, clock: systemClock });
        const link = new TreLink({
          meterId: o.meter,
          endpoints: [o.tre],
          tls: { key: await readFile(o.key), cert: await readFile(o.cert), ca },
          outbox: new Outbox(
            join(await import('node:os').then((os) => os.tmpdir()), `attest-${process.pid}.jsonl`),
          ),
          clock: new ManualClock(Date.now()),
          attestor: async (session) => {
            const v = await attestor(session);
            verdict = v;
            return v;
          },
        });
        const done = new Promise<void>((resolve) => {
          link.on('state', (state, detail) => {
            if (state === 'trusted' || state === 'untrusted') resolve();
            if (state === 'offline') {
              verdict = { trusted: false, check: 'connect', reason: detail ?? 'connection failed' };
              resolve();
            }
          });
        });
        link.start();
        await done;
        await link.stop();
        if (o.json) console.log(JSON.stringify(verdict));
        else console.log(verdict.trusted ? 'trusted' : `NOT trusted: ${verdict.check}: ${verdict.reason}`);
        if (!verdict.trusted) process.exitCode = 1;
      },
    );
  return program;
}

interface StatusFile {
  trust: string;
  lastInterval: { intervalStart: string; importWh: number } | null;
  outboxDepth: number;
  runningBill: { periodStart: string; totalMinor: number; currency: string } | null;
  openEvents: string[];
  proposals: { bidId: string; eventId: string; quantityWh: number; pricePerMWh: number; status: string }[];
  updatedAt: string;
}

function readStatus(stateDir: string): StatusFile {
  try {
    return JSON.parse(readFileSync(join(stateDir, 'status.json'), 'utf8')) as StatusFile;
  } catch {
    throw new Error(`no status in ${stateDir}: is the agent running (meter-agent run)?`);
  }
}

/** Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code.startsWith('agent.')) console.error(`meter-agent: ${err.message}`);
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
        ? 0
        : 2;
    }
    console.error(`meter-agent: ${(err as Error).message}`);
    return 1;
  }
}
