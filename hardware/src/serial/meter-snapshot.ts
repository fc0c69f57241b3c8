/**
 * What a meter says now, the same shape whichever way it was read (DSMR P1 telegram, SML frame,
 * IEC 62056-21 mode C readout), with the unit in every field name. Times are ms since the epoch,
 * present only where the meter sent one (an SML or mode C meter rarely does). The household's own
 * view (e.g. Home Assistant); nothing here goes to the TRE beyond the interval registers.
 */

export type Phase = 'L1' | 'L2' | 'L3';

export interface PhaseValues {
  voltageV?: number;
  currentA?: number;
  powerImportW?: number;
  powerExportW?: number;
}

/** Per-phase counts, e.g. voltage sags per phase. */
export type PhaseCounts = Partial<Record<Phase, number>>;

/** What an M-Bus device reads, by its EN 13757-3 device type. */
export type MbusKind = 'gas' | 'water' | 'heat' | 'cold' | 'electricity' | 'unknown';

/**
 * The kind of an EN 13757-3 device type (DSMR 0-n:24.1.0 sends it in decimal: `003` gas,
 * `007` water, `004` heat ...).
 */
export function mbusKind(deviceType: number | undefined): MbusKind {
  switch (deviceType) {
    case 0x02:
      return 'electricity';
    case 0x03:
      return 'gas';
    case 0x04: // heat, volume measured at the return
    case 0x0c: // heat, volume measured at the flow
    case 0x0d: // heat / cooling load meter
      return 'heat';
    case 0x0a: // cooling load meter, return
    case 0x0b: // cooling load meter, flow
      return 'cold';
    case 0x06: // warm water
    case 0x07: // water
    case 0x15: // hot water
    case 0x16: // cold water
      return 'water';
    default:
      return 'unknown';
  }
}

export interface MbusReading {
  /** The M-Bus channel (DSMR `0-n:`), 1-4. */
  channel: number;
  /** EN 13757-3 device type, when the meter says (0-n:24.1.0). */
  deviceType?: number;
  kind: MbusKind;
  /** Gas or water: volume in litres (m3 x 1000). */
  litres?: number;
  /** Heat, cooling or electricity: energy in Wh. */
  wh?: number;
  /** When the device was read (ms since epoch). */
  at?: number;
}

export interface PowerFailureEvent {
  /** End of the failure (ms since epoch), when the meter's timestamp is a real one. */
  endedAt?: number;
  durationS: number;
}

export interface DemandPeakSnapshot {
  /** The month the peak belongs to (its first day, ms since epoch). */
  monthStart?: number;
  at?: number;
  maxW: number;
}

/** The Belgian capacity tariff's demand (15-minute average power). */
export interface PeakSnapshot {
  /** The running 15-minute average (1-0:1.4.0). */
  currentAverageW?: number;
  /** The highest 15-minute average this month (1-0:1.6.0) and when. */
  monthMaxW?: number;
  monthMaxAt?: number;
  /** Previous months' peaks (0-0:98.1.0), oldest first as sent. */
  history?: DemandPeakSnapshot[];
}

/** The energy registers and power every way of reading a meter gives. */
export interface MeterRegisters {
  /** 1-0:1.8.0 when the meter sends it, else the sum of the tariff registers. */
  importWh: number;
  /** 1-0:2.8.0 when the meter sends it, else the sum of the tariff registers (0 without any). */
  exportWh: number;
  /** Per-tariff registers, e.g. { '1': 123456, '2': 789 }; empty on meters that send totals only. */
  importByTariffWh: Record<string, number>;
  exportByTariffWh: Record<string, number>;
  powerImportW?: number;
  powerExportW?: number;
}

export interface MeterSnapshot extends MeterRegisters {
  protocol: 'dsmr' | 'sml' | 'iec62056-21';
  /** Meter time (ms since epoch), when the meter sends one. */
  at?: number;
  phases?: Partial<Record<Phase, PhaseValues>>;
  mbus: MbusReading[];
  peaks?: PeakSnapshot;
  /** Power failures in any phase (0-0:96.7.21) and long ones (0-0:96.7.9). */
  powerFailures?: number;
  longPowerFailures?: number;
  /** The long power failure event log (1-0:99.97.0). */
  powerFailureLog?: PowerFailureEvent[];
  voltageSags?: PhaseCounts;
  voltageSwells?: PhaseCounts;
  /** Tariff indicator (0-0:96.14.0), e.g. `0001`. */
  tariff?: string;
  /** OBIS codes of the lines or entries that could not be read (never their values). */
  skippedLines: string[];
}

/** ISO 8601 (or undefined) to ms since epoch, undefined when it is no real time. */
export function epochMs(iso: string | undefined): number | undefined {
  if (iso === undefined) return undefined;
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? ms : undefined;
}
