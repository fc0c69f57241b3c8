/** Each supplier's billing period calendar (`billing_periods`): anchor and length. */
import type { PeriodLength } from '@tre/protocol';
import type { Store } from '../store/store.js';

export interface SupplierPeriod {
  supplierId: string;
  startsAt: number;
  length: PeriodLength;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS billing_periods (supplier_id TEXT PRIMARY KEY, starts_at INTEGER NOT NULL,
  unit TEXT NOT NULL, count INTEGER NOT NULL);`;

interface Row {
  supplier_id: string;
  starts_at: number;
  unit: 'day' | 'month';
  count: number;
}

const fromRow = (r: Row): SupplierPeriod => ({
  supplierId: r.supplier_id,
  startsAt: r.starts_at,
  length: { unit: r.unit, count: r.count },
});

export class PeriodBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): PeriodBook {
    store.migrate('billing-periods-1', SCHEMA);
    return new PeriodBook(store);
  }

  all(): SupplierPeriod[] {
    return (this.store.statement('SELECT * FROM billing_periods').all() as Row[]).map(fromRow);
  }

  of(supplierId: string): SupplierPeriod | undefined {
    const row = this.store.statement('SELECT * FROM billing_periods WHERE supplier_id = ?').get(supplierId) as
      | Row
      | undefined;
    return row && fromRow(row);
  }

  /** Call inside a commit. */
  put(p: SupplierPeriod): void {
    this.store
      .statement(
        'INSERT INTO billing_periods (supplier_id, starts_at, unit, count) VALUES (?, ?, ?, ?) ON CONFLICT (supplier_id) DO UPDATE SET starts_at = excluded.starts_at, unit = excluded.unit, count = excluded.count',
      )
      .run(p.supplierId, p.startsAt, p.length.unit, p.length.count);
  }
}
