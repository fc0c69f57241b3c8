/**
 * The stored interval readings and the alerts raised about them: the `readings` and `alerts`
 * tables are created, written and read here only. Monitoring, billing and demand response read
 * readings through these queries; the simulator through `storedEnergies` and `recentAlerts`; the
 * retention service deletes old ones through `deleteBefore` and `deleteAlertsBefore`.
 *
 * Calls made inside a `Store.commit` callback run in that transaction (one SQLite connection).
 */
import type { Alert } from '@tre/protocol';
import type { Store } from '../store/store.js';

export interface StoredReading {
  register_wh: number;
  status: string;
  content_hash: string;
}

/** A meter's stored readings at an interval and at the intervals just before and after it. */
export interface NearbyReadings {
  same: StoredReading | undefined;
  previous: StoredReading | undefined;
  next: StoredReading | undefined;
}

export interface NewReading {
  meterId: string;
  intervalStart: number;
  intervalMinutes: number;
  energyWh: number;
  registerWh: number;
  exportWh: number | null;
  exportRegisterWh: number | null;
  gap: boolean;
  effectiveWh: number;
  status: 'ok' | 'excluded';
  contentHash: string;
  receivedAt: number;
}

/** What one meter reported over a window: in-bounds energy, minutes covered, readings excluded. */
export interface WindowReadings {
  wh: number;
  coveredMinutes: number;
  excluded: number;
}

const SCHEMA = `CREATE TABLE readings (
    meter_id TEXT NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_minutes INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    register_wh INTEGER NOT NULL,
    export_wh INTEGER,
    export_register_wh INTEGER,
    gap INTEGER NOT NULL DEFAULT 0,
    effective_wh INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'excluded')),
    content_hash TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (meter_id, interval_start)
  ) WITHOUT ROWID;
  CREATE INDEX readings_interval ON readings (interval_start);
  CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    meter_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL
  );`;

/** Rows per multi-row INSERT at most (a power of two). */
const MAX_ROWS_PER_INSERT = 256;
const insertSqls = new Map<number, string>();
function insertSql(rows: number): string {
  let sql = insertSqls.get(rows);
  if (!sql) {
    sql = `INSERT INTO readings (meter_id, interval_start, interval_minutes, energy_wh, register_wh, export_wh,
       export_register_wh, gap, effective_wh, status, content_hash, received_at)
     VALUES ${Array(rows).fill('(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`;
    insertSqls.set(rows, sql);
  }
  return sql;
}

export class ReadingStore {
  private constructor(private readonly store: Store) {}

  /** The reading store of `store`, its tables created on first use. */
  static open(store: Store): ReadingStore {
    store.migrate('readings-1', SCHEMA);
    return new ReadingStore(store);
  }

  get(meterId: string, intervalStart: number): StoredReading | undefined {
    return this.store
      .statement(
        'SELECT register_wh, status, content_hash FROM readings WHERE meter_id = ? AND interval_start = ?',
      )
      .get(meterId, intervalStart) as StoredReading | undefined;
  }

  /**
   * The readings of `meterId` at `intervalStart` and `lengthMs` before and after it, in one query (one
   * range of the primary key: faster than three lookups or an IN list).
   */
  nearby(meterId: string, intervalStart: number, lengthMs: number): NearbyReadings {
    const rows = this.store
      .statement(
        `SELECT interval_start, register_wh, status, content_hash FROM readings
         WHERE meter_id = ? AND interval_start BETWEEN ? AND ?`,
      )
      .all(meterId, intervalStart - lengthMs, intervalStart + lengthMs) as (StoredReading & {
      interval_start: number;
    })[];
    const at = (t: number) => rows.find((r) => r.interval_start === t);
    return {
      same: at(intervalStart),
      previous: at(intervalStart - lengthMs),
      next: at(intervalStart + lengthMs),
    };
  }

  insert(r: NewReading): void {
    this.insertMany([r]);
  }

  /**
   * Inserts readings with as few statements as possible: multi-row INSERTs of 256, 128, ..., 1 rows
   * (at most nine statements prepared once, 12 x 256 parameters at most). Inside a commit.
   */
  insertMany(rows: readonly NewReading[]): void {
    let done = 0;
    for (let size = MAX_ROWS_PER_INSERT; size >= 1; size >>= 1) {
      while (rows.length - done >= size) {
        const params: (string | number | null)[] = [];
        for (let i = done; i < done + size; i++) {
          const r = rows[i]!;
          params.push(
            r.meterId,
            r.intervalStart,
            r.intervalMinutes,
            r.energyWh,
            r.registerWh,
            r.exportWh,
            r.exportRegisterWh,
            r.gap ? 1 : 0,
            r.effectiveWh,
            r.status,
            r.contentHash,
            r.receivedAt,
          );
        }
        this.store.statement(insertSql(size)).run(params);
        done += size;
      }
    }
  }

  /** Deletes one reading (a reading whose hooks failed in its batch). Inside a commit. */
  deleteOne(meterId: string, intervalStart: number): void {
    this.store
      .statement('DELETE FROM readings WHERE meter_id = ? AND interval_start = ?')
      .run(meterId, intervalStart);
  }

  insertAlert(meterId: string, kind: Alert['kind'], detail: string, at: number): void {
    this.store
      .statement('INSERT INTO alerts (meter_id, kind, detail, at) VALUES (?, ?, ?, ?)')
      .run(meterId, kind, detail, at);
  }

  /** Per meter of `meterIds` with any reading in [from, to): what it reported there. */
  windowOf(meterIds: readonly string[], from: number, to: number): Map<string, WindowReadings> {
    const rows = this.store
      .statement(
        `SELECT r.meter_id, sum(CASE WHEN r.status = 'ok' THEN r.effective_wh ELSE 0 END) AS wh,
                sum(r.interval_minutes) AS covered, sum(r.status = 'excluded') AS excluded
         FROM readings r JOIN json_each(?) m ON m.value = r.meter_id
         WHERE r.interval_start >= ? AND r.interval_start < ? GROUP BY r.meter_id`,
      )
      .all(JSON.stringify(meterIds), from, to) as {
      meter_id: string;
      wh: number;
      covered: number;
      excluded: number;
    }[];
    return new Map(
      rows.map((r) => [r.meter_id, { wh: r.wh, coveredMinutes: r.covered, excluded: r.excluded }]),
    );
  }

  /** One meter's in-bounds energy in [from, to) and the minutes its readings cover. */
  energyIn(meterId: string, from: number, to: number): { wh: number; minutes: number } {
    return this.store
      .statement(
        `SELECT coalesce(sum(effective_wh), 0) AS wh, coalesce(sum(interval_minutes), 0) AS minutes FROM readings
         WHERE meter_id = ? AND status = 'ok' AND interval_start >= ? AND interval_start < ?`,
      )
      .get(meterId, from, to) as { wh: number; minutes: number };
  }

  /** Every stored reading's effective energy (the simulator's end-of-run check). */
  storedEnergies(): { meterId: string; intervalStart: number; effectiveWh: number }[] {
    return this.store
      .statement(
        'SELECT meter_id AS meterId, interval_start AS intervalStart, effective_wh AS effectiveWh FROM readings',
      )
      .all() as { meterId: string; intervalStart: number; effectiveWh: number }[];
  }

  /** How many in-bounds readings are stored (benchmarks count what was committed). */
  countInBounds(): number {
    return (
      this.store.statement("SELECT count(*) AS n FROM readings WHERE status = 'ok'").get() as { n: number }
    ).n;
  }

  /**
   * Retention (retention/retention-rule.ts): deletes up to `limit` readings of `meterIds` whose
   * interval starts before `intervalStart`; returns how many it deleted (fewer than `limit`: none
   * of them is left). Inside a commit.
   */
  deleteBefore(intervalStart: number, meterIds: readonly string[], limit: number): number {
    return this.store
      .statement(
        `DELETE FROM readings WHERE (meter_id, interval_start) IN (
           SELECT r.meter_id, r.interval_start FROM json_each(?) m JOIN readings r ON r.meter_id = m.value
           WHERE r.interval_start < ? LIMIT ?)`,
      )
      .run(JSON.stringify(meterIds), intervalStart, limit).changes;
  }

  /**
   * Retention: deletes the alerts of `meterIds` raised before `at`. An alert is raised when its
   * reading arrives, after its interval, so these are about readings that are gone too; they were
   * delivered to the household (and the regulator) when raised and are kept only for the
   * operator's dashboard. Returns how many it deleted. Inside a commit.
   */
  deleteAlertsBefore(at: number, meterIds: readonly string[]): number {
    return this.store
      .statement('DELETE FROM alerts WHERE at < ? AND meter_id IN (SELECT value FROM json_each(?))')
      .run(at, JSON.stringify(meterIds)).changes;
  }

  /** The newest alerts, newest first (the operator's dashboard). */
  recentAlerts(limit: number): { kind: string; detail: string; at: number }[] {
    return this.store
      .statement('SELECT kind, detail, at FROM alerts ORDER BY id DESC LIMIT ?')
      .all(limit) as { kind: string; detail: string; at: number }[];
  }
}
