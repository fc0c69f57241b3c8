/**
 * Interval energy from register readings. Intervals (15 or 30 minutes) start at wall-clock
 * boundaries; for every time zone whose UTC offset is a multiple of 15 minutes (all of Europe,
 * across DST changes) those are exactly the UTC multiples of the interval, so intervals are keyed
 * by their UTC start and the repeated hour of a DST fall-back yields distinct intervals.
 * The register at a boundary is the last reading at or before it; an interval's energy is the
 * register at its end minus the register at its start, import and export separately.
 * A gap (no reading in one or more whole intervals: agent down, meter unplugged) is closed by the
 * first reading after it: the energy across the gap is attributed to the interval that closes it,
 * flagged `gap` with the span it covers; the intervals inside the gap are not invented.
 */
export interface RegisterReading {
  /** Meter time, ms since epoch. */
  at: number;
  importWh: number;
  exportWh: number;
}

export interface IntervalRecord {
  intervalStart: string;
  intervalMinutes: 15 | 30;
  importWh: number;
  exportWh: number;
  importRegisterWh: number;
  exportRegisterWh: number;
  gap?: { from: string; intervals: number };
}

export class IntervalAccumulator {
  private last: RegisterReading | undefined;
  /** The register at the most recent boundary crossed (the last reading at or before it). */
  private anchor: { at: number; importWh: number; exportWh: number } | undefined;
  /** Set when boundaries passed without readings: the next interval closes a gap. */
  private gapFrom: number | undefined;

  constructor(readonly intervalMinutes: 15 | 30) {}

  /** Feeds a reading (in time order; older or equal readings are ignored); returns closed intervals. */
  push(r: RegisterReading): IntervalRecord[] {
    const step = this.intervalMinutes * 60_000;
    const last = this.last;
    if (last && r.at <= last.at) return [];
    this.last = r;
    // A reading exactly on a boundary is the register at that boundary.
    const onBoundary = r.at % step === 0;
    if (!last) {
      if (onBoundary) this.anchor = { at: r.at, importWh: r.importWh, exportWh: r.exportWh };
      return [];
    }
    const lastBoundary = Math.floor(last.at / step) * step;
    const crossed = Math.floor(r.at / step) * step;
    if (crossed === lastBoundary) return [];
    const out: IntervalRecord[] = [];
    const end = lastBoundary + step;
    // The register at `end`: this reading if it lies exactly on it, else the last one before it.
    // It is also the register at `crossed`, where this reading's interval starts: `crossed` is `end`
    // unless whole intervals went without a reading, and then their energy is not invented but
    // lands in the interval that closes the gap (it starts from the last reading before the gap).
    const atEnd = crossed === end && onBoundary ? r : last;
    if (this.anchor && this.anchor.at === lastBoundary) {
      out.push({
        intervalStart: new Date(lastBoundary).toISOString(),
        intervalMinutes: this.intervalMinutes,
        importWh: atEnd.importWh - this.anchor.importWh,
        exportWh: atEnd.exportWh - this.anchor.exportWh,
        importRegisterWh: atEnd.importWh,
        exportRegisterWh: atEnd.exportWh,
        ...(this.gapFrom !== undefined
          ? { gap: { from: new Date(this.gapFrom).toISOString(), intervals: (end - this.gapFrom) / step } }
          : {}),
      });
      this.gapFrom = undefined;
    }
    if (crossed > end) this.gapFrom = end;
    this.anchor = { at: crossed, importWh: atEnd.importWh, exportWh: atEnd.exportWh };
    return out;
  }
}
