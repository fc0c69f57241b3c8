/**
 * The agent's reader pipeline: the meter's serial port (DSMR P1 telegrams through a P1 cable, or
 * IEC 62056-21 mode C readouts through an optical head) -> register readings -> closed intervals.
 * `meter-agent run` and `meter-agent read --port` read the meter through it.
 */
import {
  type DsmrTelegram,
  IntervalAccumulator,
  type IntervalRecord,
  MeterReader,
  ModeCReader,
  type RegisterReading,
  systemSerialBinding,
} from '@tre/hardware';
import type { Clock } from '@tre/protocol';
import type { AgentConfig } from './agent-config.js';

/** How to reach the meter. */
export type MeterPort =
  | { protocol: 'dsmr'; path: string; baudRate: number; dataBits: 7 | 8; parity: 'none' | 'even' }
  /** Optical head: the meter is asked (mode C); registers are timed by this box's clock. */
  | { protocol: 'iec62056-21'; path: string; pollMs: number };

export interface MeterReadingHandlers {
  /** A closed interval. */
  interval(record: IntervalRecord): void;
  /** Every parsed DSMR telegram, before the intervals it closes. */
  telegram?(telegram: DsmrTelegram): void;
  rejected(reason: string, detail?: string): void;
  state(state: 'open' | 'closed' | 'error', detail?: string): void;
}

/** The meter port of the agent's configuration. */
export function meterPortOf(meter: AgentConfig['meter']): MeterPort {
  if (meter.protocol === 'iec62056-21')
    return { protocol: 'iec62056-21', path: meter.port, pollMs: meter.pollSeconds * 1000 };
  const slow = meter.framing === '9600-7E1';
  return {
    protocol: 'dsmr',
    path: meter.port,
    baudRate: slow ? 9_600 : 115_200,
    dataBits: slow ? 7 : 8,
    parity: slow ? 'even' : 'none',
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
): Promise<MeterReader | ModeCReader> {
  const binding = await systemSerialBinding();
  const acc = new IntervalAccumulator(intervalMinutes);
  const record = (reading: RegisterReading) => {
    for (const interval of acc.push(reading)) on.interval(interval);
  };
  let reader: MeterReader | ModeCReader;
  if (port.protocol === 'iec62056-21') {
    const modeC = new ModeCReader({ path: port.path, binding, clock, pollMs: port.pollMs });
    modeC.on('readout', (r) => record({ at: r.at, importWh: r.importWh, exportWh: r.exportWh }));
    modeC.on('rejected', (reason, detail) => on.rejected(reason, detail));
    reader = modeC;
  } else {
    const { path, baudRate, dataBits, parity } = port;
    const p1 = new MeterReader({ path, binding, clock, baudRate, dataBits, parity });
    p1.on('telegram', (t) => {
      on.telegram?.(t);
      const reading = telegramReading(t);
      if (reading) record(reading);
    });
    p1.on('rejected', (reason, detail) => on.rejected(reason, detail));
    reader = p1;
  }
  reader.on('state', (state, detail) => on.state(state, detail));
  return reader;
}
