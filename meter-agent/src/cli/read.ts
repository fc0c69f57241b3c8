/**
 * `meter-agent read`: parsed telegrams (or SML files) and interval energy, from a capture file
 * (`meter-replay.ts` for DSMR, `replaySml` here for SML) or a live port (the daemon's reader
 * pipeline, `meter-reading.ts`).
 */
import { readFileSync } from 'node:fs';
import {
  IntervalAccumulator,
  type IntervalRecord,
  type MeterSnapshot,
  parseSmlFile,
  SmlFramer,
  smlSnapshot,
  takeStopSignals,
} from '@tre/hardware';
import { systemClock } from '@tre/protocol';
import { type Command, CommanderError } from 'commander';
import { type MeterPort, openMeterReading } from '../meter-reading.js';
import { replay } from '../meter-replay.js';

interface ReadOptions {
  replay?: string;
  port?: string;
  protocol?: string;
  baud?: number;
  sevenEOne?: boolean;
  interval: number;
  json?: boolean;
}

const SML_START = Buffer.from('1b1b1b1b01010101', 'hex');

export function addReadCommand(program: Command): void {
  program
    .command('read')
    .description('print parsed telegrams and interval energy from a meter port or a capture file')
    .option('--replay <file>', 'a capture of the meter’s serial bytes (DSMR text or binary SML)')
    .option('--port <path>', 'a live serial port, e.g. /dev/ttyUSB0 (Ctrl-C stops)')
    .option(
      '--protocol <name>',
      'dsmr (P1 cable) or sml (IR head); default dsmr, for --replay told from the bytes',
    )
    .option(
      '--baud <rate>',
      'baud rate (DSMR 4/5: 115200; DSMR 2.2/3: 9600 with --seven-e-one; SML: 9600)',
      (v) => Number.parseInt(v, 10),
    )
    .option('--seven-e-one', '7 data bits, even parity (DSMR 2.2/3)')
    .option('--interval <minutes>', '15 or 30', (v) => Number.parseInt(v, 10), 15)
    .option('--json', 'print JSON')
    .action(async (o: ReadOptions) => {
      if (!o.replay === !o.port)
        throw new CommanderError(2, 'agent.read', 'give either --replay FILE or --port PATH');
      if (o.protocol !== undefined && o.protocol !== 'dsmr' && o.protocol !== 'sml')
        throw new CommanderError(2, 'agent.read', '--protocol is dsmr or sml');
      if (o.protocol === 'sml' && o.sevenEOne)
        throw new CommanderError(2, 'agent.read', 'SML is 8N1: --seven-e-one is for DSMR 2.2/3');
      const minutes = o.interval === 30 ? 30 : 15;
      if (o.replay) {
        const bytes = readFileSync(o.replay);
        const sml = o.protocol ? o.protocol === 'sml' : bytes.includes(SML_START);
        if (sml) printSmlReplay(bytes, minutes, o.json);
        else printReplay(bytes, minutes, o.json);
      } else await readPort(o.port!, minutes, o);
    });
}

function printReplay(bytes: Buffer, minutes: 15 | 30, json: boolean | undefined): void {
  const r = replay(bytes, minutes);
  if (json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  for (const t of r.telegrams)
    console.log(
      `${t.timestamp ?? '(no time)'}  import ${t.importWh} Wh  export ${t.exportWh} Wh${t.powerImportW !== undefined ? `  ${t.powerImportW} W` : ''}${t.crcChecked ? '  CRC ok' : ''}${t.skippedLines.length > 0 ? `  skipped ${t.skippedLines.join(' ')}` : ''}`,
    );
  for (const x of r.rejected) console.log(`rejected: ${x.reason} (${x.detail})`);
  printIntervals(r.intervals);
  console.log(
    `${r.telegrams.length} telegrams, ${r.rejected.length} rejected, ${r.noiseBytes} noise bytes, ${r.intervals.length} intervals`,
  );
}

interface SmlReplayResult {
  snapshots: MeterSnapshot[];
  rejected: { reason: string; detail: string }[];
  /** Only from files that carry the meter's time (most SML meters send none). */
  intervals: IntervalRecord[];
  noiseBytes: number;
  truncated: number;
}

/** What the agent makes of a capture of an SML meter's bytes: each file parsed or rejected. */
function replaySml(bytes: Buffer, intervalMinutes: 15 | 30 = 15): SmlReplayResult {
  const framer = new SmlFramer();
  const acc = new IntervalAccumulator(intervalMinutes);
  const result: SmlReplayResult = { snapshots: [], rejected: [], intervals: [], noiseBytes: 0, truncated: 0 };
  for (const file of framer.push(bytes)) {
    const parsed = parseSmlFile(file);
    if (!parsed.ok) {
      result.rejected.push({ reason: parsed.reason, detail: parsed.detail });
      continue;
    }
    const r = parsed.readout;
    result.snapshots.push(smlSnapshot(r));
    if (r.at !== undefined)
      result.intervals.push(...acc.push({ at: r.at, importWh: r.importWh, exportWh: r.exportWh }));
  }
  result.noiseBytes = framer.stats.noiseBytes;
  result.truncated = framer.stats.truncated;
  return result;
}

function printSmlReplay(bytes: Buffer, minutes: 15 | 30, json: boolean | undefined): void {
  const r = replaySml(bytes, minutes);
  if (json) {
    console.log(JSON.stringify(r, null, 2));
    return;
  }
  for (const s of r.snapshots) console.log(snapshotLine(s));
  for (const x of r.rejected) console.log(`rejected: ${x.reason} (${x.detail})`);
  printIntervals(r.intervals);
  console.log(
    `${r.snapshots.length} SML files, ${r.rejected.length} rejected, ${r.truncated} cut off, ${r.noiseBytes} noise bytes, ${r.intervals.length} intervals`,
  );
}

function snapshotLine(s: MeterSnapshot): string {
  const power =
    s.powerImportW !== undefined || s.powerExportW !== undefined
      ? `  power in ${s.powerImportW ?? '-'} W out ${s.powerExportW ?? '-'} W`
      : '';
  const at = s.at !== undefined ? new Date(s.at).toISOString() : '(no meter time)';
  return `${at}  import ${s.importWh} Wh  export ${s.exportWh} Wh${power}${s.skippedLines.length > 0 ? `  skipped ${s.skippedLines.join(' ')}` : ''}`;
}

function printIntervals(intervals: IntervalRecord[]): void {
  for (const i of intervals)
    console.log(
      `interval ${i.intervalStart} ${i.intervalMinutes} min: ${i.importWh} Wh in, ${i.exportWh} Wh out${i.gap ? ` (closes a gap of ${i.gap.intervals} intervals)` : ''}`,
    );
}

/** Until Ctrl-C (or SIGTERM). */
async function readPort(path: string, minutes: 15 | 30, o: ReadOptions): Promise<void> {
  const port: MeterPort =
    o.protocol === 'sml'
      ? { protocol: 'sml', path, baudRate: o.baud ?? 9_600 }
      : {
          protocol: 'dsmr',
          path,
          baudRate: o.baud ?? 115_200,
          dataBits: o.sevenEOne ? 7 : 8,
          parity: o.sevenEOne ? 'even' : 'none',
        };
  // From before the port opens (a Ctrl-C while opening stops once it is open) until the port is
  // closed: a second Ctrl-C cannot cut the close short.
  const signals = takeStopSignals({ name: 'meter-agent read' });
  try {
    const reader = await openMeterReading(port, minutes, systemClock, {
      snapshot: (s) => console.log(o.json ? JSON.stringify(s) : snapshotLine(s)),
      interval: (i) =>
        console.log(o.json ? JSON.stringify(i) : `interval ${i.intervalStart}: ${i.importWh} Wh`),
      rejected: (reason, detail) => console.error(`rejected: ${reason} (${detail})`),
      state: (state, detail) => console.error(`port ${state}${detail ? `: ${detail}` : ''}`),
    });
    reader.start();
    await signals.first;
    await reader.stop();
    const s = reader.stats;
    console.error(
      `${s.telegrams} read, ${s.crcErrors} CRC errors, ${s.rejected} rejected, ${s.skippedLines} lines skipped`,
    );
  } finally {
    signals.dispose();
  }
}
