/**
 * Issued statements (`statements`): the supplier's statement and the household's own copy (with its
 * counts), stored before they are signed and sent, so a crash in between is finished at the next
 * start; re-sent to the supplier until it acknowledges them.
 */
import type { HouseholdStatement, Statement } from '@tre/protocol';
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
  household: HouseholdStatement;
}

/** Statements stored before the household copy existed carried its counts in the supplier's body. */
function split(
  body: string,
  householdBody: string | null,
): { statement: Statement; household: HouseholdStatement } {
  if (householdBody)
    return { statement: JSON.parse(body) as Statement, household: JSON.parse(householdBody) };
  const {
    intervalsBilled = 0,
    intervalsMissing = 0,
    ...rest
  } = JSON.parse(body) as Statement & {
    intervalsBilled?: number;
    intervalsMissing?: number;
  };
  const statement: Statement = { ...rest, basis: intervalsMissing === 0 ? 'complete' : 'estimated' };
  return {
    statement,
    household: { ...statement, readingsBilled: intervalsBilled, minutesMissing: intervalsMissing * 15 },
  };
}

export class StatementBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): StatementBook {
    store.migrate('statements-1', SCHEMA);
    store.migrate(
      'statements-2',
      'ALTER TABLE statements ADD COLUMN household_body TEXT; ALTER TABLE statements ADD COLUMN household_jws TEXT;',
    );
    return new StatementBook(store);
  }

  /** Start of the last period stated for a supplier. */
  lastStated(supplierId: string): number | undefined {
    const row = this.store
      .statement('SELECT max(period_start) AS s FROM statements WHERE supplier_id = ?')
      .get(supplierId) as { s: number | null };
    return row.s ?? undefined;
  }

  /** Stores a statement and its household copy unless that household's period was stated before; true if stored. Inside a commit. */
  add(meterId: string, periodStart: number, s: Statement, household: HouseholdStatement): boolean {
    return (
      this.store
        .statement(
          'INSERT INTO statements (statement_id, supplier_id, meter_id, period_start, body, household_body) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
        )
        .run(s.statementId, s.supplierId, meterId, periodStart, JSON.stringify(s), JSON.stringify(household))
        .changes === 1
    );
  }

  unsigned(): UnsignedStatement[] {
    const rows = this.store
      .statement(
        'SELECT statement_id, supplier_id, meter_id, body, household_body FROM statements WHERE jws IS NULL',
      )
      .all() as {
      statement_id: string;
      supplier_id: string;
      meter_id: string;
      body: string;
      household_body: string | null;
    }[];
    return rows.map((r) => ({
      statementId: r.statement_id,
      supplierId: r.supplier_id,
      meterId: r.meter_id,
      ...split(r.body, r.household_body),
    }));
  }

  /** Both copies' signatures. Inside a commit. */
  setSignature(statementId: string, jws: string, householdJws: string): void {
    this.store
      .statement('UPDATE statements SET jws = ?, household_jws = ? WHERE statement_id = ?')
      .run(jws, householdJws, statementId);
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
