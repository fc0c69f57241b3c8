/**
 * `meter-agent read`: parsed telegrams and interval energy, from a capture file (`meter-replay.ts`)
 * or a live port (the daemon's reader pipeline, `meter-reading.ts`).
 */
import { readFileSync } from 'node:fs';
import { systemClock } from '@tre/protocol';
import { type Command, CommanderError } from 'commander';
import { type MeterPort, openMeterReading } from '../meter-reading.js';
import { replay } from '../meter-replay.js';

interface ReadOptions {
  replay?: string;
  port?: string;
  baud: number;
  sevenEOne?: boolean;
  interval: number;
  json?: boolean;
}

export function addReadCommand(program: Command): void {
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
    .action(async (o: ReadOptions) => {
      if (!o.replay === !o.port)
        throw new CommanderError(2, 'agent.read', 'give either --replay FILE or --port PATH');
      const minutes = o.interval === 30 ? 30 : 15;
      if (o.replay) printReplay(o.replay, minutes, o.json);
      else await readPort(o.port!, minutes, o);
    });
}

function printReplay(file: string, minutes: 15 | 30, json: boolean | undefined): void {
  const r = replay(readFileSync(file), minutes);
  if (json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
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
}

/** Until Ctrl-C. */
async function readPort(path: string, minutes: 15 | 30, o: ReadOptions): Promise<void> {
  const port: MeterPort = {
    protocol: 'dsmr',
    path,
    baudRate: o.baud,
    dataBits: o.sevenEOne ? 7 : 8,
    parity: o.sevenEOne ? 'even' : 'none',
  };
  const reader = await openMeterReading(port, minutes, systemClock, {
    telegram: (t) =>
      console.log(
        o.json ? JSON.stringify(t) : `${t.timestamp}  import ${t.importWh} Wh  export ${t.exportWh} Wh`,
      ),
    interval: (i) =>
      console.log(o.json ? JSON.stringify(i) : `interval ${i.intervalStart}: ${i.importWh} Wh`),
    rejected: (reason, detail) => console.error(`rejected: ${reason} (${detail})`),
    state: (state, detail) => console.error(`port ${state}${detail ? `: ${detail}` : ''}`),
  });
  reader.start();
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  await reader.stop();
}
