/**
 * Each supplier's billing period calendar (`billing_calendar`): its segments (period-calendar.ts),
 * the one in force and any pending change that takes effect at a later boundary. (`billing_periods`
 * held one anchor per supplier before calendars were anchored; its rows become first segments.)
 */
import type { PeriodLength } from '@tre/protocol';
import type { Store } from '../store/store.js';
import type { Calendar } from './period-calendar.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS billing_periods (supplier_id TEXT PRIMARY KEY, starts_at INTEGER NOT NULL,
  unit TEXT NOT NULL, count INTEGER NOT NULL);`;

const CALENDAR_SCHEMA = `CREATE TABLE IF NOT EXISTS billing_calendar (supplier_id TEXT NOT NULL, starts_at INTEGER NOT NULL,
    unit TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (supplier_id, starts_at)) WITHOUT ROWID;
  INSERT INTO billing_calendar (supplier_id, starts_at, unit, count) SELECT supplier_id, starts_at, unit, count FROM billing_periods;
  DROP TABLE billing_periods;`;

interface Row {
  supplier_id: string;
  starts_at: number;
  unit: PeriodLength['unit'];
  count: number;
}

export interface SupplierCalendar {
  supplierId: string;
  calendar: Calendar;
}

export class PeriodBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): PeriodBook {
    store.migrate('billing-periods-1', SCHEMA);
    store.migrate('billing-periods-2', CALENDAR_SCHEMA);
    return new PeriodBook(store);
  }

  suppliers(): string[] {
    const rows = this.store.statement('SELECT DISTINCT supplier_id FROM billing_calendar').all() as {
      supplier_id: string;
    }[];
    return rows.map((r) => r.supplier_id);
  }

  of(supplierId: string): Calendar | undefined {
    const rows = this.store
      .statement('SELECT * FROM billing_calendar WHERE supplier_id = ? ORDER BY starts_at')
      .all(supplierId) as Row[];
    if (rows.length === 0) return undefined;
    return rows.map((r) => ({ from: r.starts_at, length: { unit: r.unit, count: r.count } }));
  }

  /** Replaces the supplier's calendar (segments already in force are kept as they were). Inside a commit. */
  put(supplierId: string, calendar: Calendar): void {
    this.store.statement('DELETE FROM billing_calendar WHERE supplier_id = ?').run(supplierId);
    const insert = this.store.statement(
      'INSERT INTO billing_calendar (supplier_id, starts_at, unit, count) VALUES (?, ?, ?, ?)',
    );
    for (const s of calendar) insert.run(supplierId, s.from, s.length.unit, s.length.count);
  }
}
