/**
 * The agent's reader pipeline: the meter's serial port (DSMR P1 telegrams through a P1 cable, SML
 * files through an IR head, or IEC 62056-21 mode C readouts through an optical head) -> register
 * readings -> closed intervals, and for the household's own view every accepted telegram, file or
 * readout as a `MeterSnapshot`. `meter-agent run` and `meter-agent read --port` read the meter
 * through it.
 */
import {
  type DsmrTelegram,
  dsmrSnapshot,
  IntervalAccumulator,
  type IntervalRecord,
  MeterReader,
  type MeterSnapshot,
  ModeCReader,
  modeCSnapshot,
  type ReaderStats,
  type RegisterReading,
  SmlReader,
  smlSnapshot,
  systemSerialBinding,
} from '@tre/hardware';
import type { Clock } from '@tre/protocol';
import type { AgentConfig } from './agent-config.js';

/** How to reach the meter. */
export type MeterPort =
  | { protocol: 'dsmr'; path: string; baudRate: number; dataBits: 7 | 8; parity: 'none' | 'even' }
  /** IR head on an SML meter (8N1): the meter sends on its own; registers timed by this box's clock. */
  | { protocol: 'sml'; path: string; baudRate: number }
  /** Optical head: the meter is asked (mode C); registers are timed by this box's clock. */
  | { protocol: 'iec62056-21'; path: string; pollMs: number };

export interface MeterReadingHandlers {
  /** A closed interval. */
  interval(record: IntervalRecord): void;
  /** Every accepted telegram, SML file or mode C readout, before the intervals it closes. */
  snapshot?(snapshot: MeterSnapshot): void;
  rejected(reason: string, detail?: string): void;
  state(state: 'open' | 'closed' | 'error', detail?: string): void;
}

/** A started-or-not reader of any protocol, with its counters for metrics. */
export interface MeterReading {
  start(): void;
  stop(): Promise<void>;
  readonly stats: ReaderStats;
}

/** The meter port of the agent's configuration. */
export function meterPortOf(meter: AgentConfig['meter']): MeterPort {
  if (meter.protocol === 'iec62056-21')
    return { protocol: 'iec62056-21', path: meter.port, pollMs: meter.pollSeconds * 1000 };
  const framing = meter.framing ?? (meter.protocol === 'sml' ? '9600-8N1' : '115200-8N1');
  const baudRate = Number.parseInt(framing, 10);
  if (meter.protocol === 'sml') return { protocol: 'sml', path: meter.port, baudRate };
  const sevenEOne = framing.endsWith('-7E1');
  return {
    protocol: 'dsmr',
    path: meter.port,
    baudRate,
    dataBits: sevenEOne ? 7 : 8,
    parity: sevenEOne ? 'even' : 'none',
  };
}

/** The register reading a telegram carries; none without the meter's timestamp. */
export function telegramReading(t: DsmrTelegram): RegisterReading | undefined {
  return t.timestamp
    ? { at: Date.parse(t.timestamp), importWh: t.importWh, exportWh: t.exportWh }
    : undefined;
}

/** Opens the reader on the system's serial binding (not started). */
export async function openMeterReading(
  port: MeterPort,
  intervalMinutes: 15 | 30,
  clock: Clock,
  on: MeterReadingHandlers,
): Promise<MeterReading> {
  const binding = await systemSerialBinding();
  const acc = new IntervalAccumulator(intervalMinutes);
  const record = (reading: RegisterReading) => {
    for (const interval of acc.push(reading)) on.interval(interval);
  };
  switch (port.protocol) {
    case 'iec62056-21': {
      const modeC = new ModeCReader({ path: port.path, binding, clock, pollMs: port.pollMs });
      modeC.on('readout', (r) => {
        on.snapshot?.(modeCSnapshot(r));
        record({ at: r.at, importWh: r.importWh, exportWh: r.exportWh });
      });
      modeC.on('rejected', (reason, detail) => on.rejected(reason, detail));
      modeC.on('state', (state, detail) => on.state(state, detail));
      return modeC;
    }
    case 'sml': {
      const ir = new SmlReader({ path: port.path, binding, clock, baudRate: port.baudRate });
      ir.on('readout', (r, receivedAt) => {
        on.snapshot?.(smlSnapshot(r));
        record({ at: r.at ?? receivedAt, importWh: r.importWh, exportWh: r.exportWh });
      });
      ir.on('rejected', (reason, detail) => on.rejected(reason, detail));
      ir.on('state', (state, detail) => on.state(state, detail));
      return ir;
    }
    case 'dsmr': {
      const { path, baudRate, dataBits, parity } = port;
      const p1 = new MeterReader({ path, binding, clock, baudRate, dataBits, parity });
      p1.on('telegram', (t) => {
        on.snapshot?.(dsmrSnapshot(t));
        const reading = telegramReading(t);
        if (reading) record(reading);
      });
      p1.on('rejected', (reason, detail) => on.rejected(reason, detail));
      p1.on('state', (state, detail) => on.state(state, detail));
      return p1;
    }
  }
}
