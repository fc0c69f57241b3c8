/**
 * Issued statements (`statements`): stored before they are signed and sent, so a crash in between
 * is finished at the next start; re-sent until the supplier acknowledges them.
 */
import type { Statement } from '@tre/protocol';
import type { Store } from '../store/store.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS statements (statement_id TEXT PRIMARY KEY, supplier_id TEXT NOT NULL, meter_id TEXT NOT NULL,
    period_start INTEGER NOT NULL, body TEXT NOT NULL, jws TEXT, acked INTEGER NOT NULL DEFAULT 0,
    UNIQUE (meter_id, period_start));
  CREATE INDEX IF NOT EXISTS statements_unacked ON statements (supplier_id) WHERE acked = 0;`;

export interface UnsignedStatement {
  statementId: string;
  supplierId: string;
  meterId: string;
  statement: Statement;
}

export class StatementBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): StatementBook {
    store.migrate('statements-1', SCHEMA);
    return new StatementBook(store);
  }

  /** Start of the last period stated for a supplier. */
  lastStated(supplierId: string): number | undefined {
    const row = this.store
      .statement('SELECT max(period_start) AS s FROM statements WHERE supplier_id = ?')
      .get(supplierId) as { s: number | null };
    return row.s ?? undefined;
  }

  /** Stores a statement unless that household's period was stated before; true if stored. Inside a commit. */
  add(meterId: string, periodStart: number, s: Statement): boolean {
    return (
      this.store
        .statement(
          'INSERT INTO statements (statement_id, supplier_id, meter_id, period_start, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        )
        .run(s.statementId, s.supplierId, meterId, periodStart, JSON.stringify(s)).changes === 1
    );
  }

  unsigned(): UnsignedStatement[] {
    const rows = this.store
      .statement('SELECT statement_id, supplier_id, meter_id, body FROM statements WHERE jws IS NULL')
      .all() as { statement_id: string; supplier_id: string; meter_id: string; body: string }[];
    return rows.map((r) => ({
      statementId: r.statement_id,
      supplierId: r.supplier_id,
      meterId: r.meter_id,
      statement: JSON.parse(r.body) as Statement,
    }));
  }

  /** Inside a commit. */
  setSignature(statementId: string, jws: string): void {
    this.store.statement('UPDATE statements SET jws = ? WHERE statement_id = ?').run(jws, statementId);
  }

  /** Marks these statements of the supplier acknowledged; returns how many were. Inside a commit. */
  acknowledge(supplierId: string, statementIds: readonly string[]): number {
    const stmt = this.store.statement(
      'UPDATE statements SET acked = 1 WHERE statement_id = ? AND supplier_id = ?',
    );
    return statementIds.reduce((n, id) => n + stmt.run(id, supplierId).changes, 0);
  }

  unacknowledged(): { supplierId: string; jws: string }[] {
    return this.store
      .statement('SELECT supplier_id AS supplierId, jws FROM statements WHERE acked = 0 AND jws IS NOT NULL')
      .all() as { supplierId: string; jws: string }[];
  }
}
