/**
 * The DNOs' aggregation groups (`dno_groups`) and which (group, interval) has been released
 * (`releases`, so a restart never releases twice). Groups are immutable once accepted.
 */
import type { Store } from '../store/store.js';

export interface Group {
  dnoId: string;
  groupId: string;
  meters: string[];
}

const SCHEMA = `CREATE TABLE dno_groups (dno_id TEXT NOT NULL, group_id TEXT NOT NULL, members TEXT NOT NULL, defined_at INTEGER NOT NULL,
    PRIMARY KEY (dno_id, group_id));
  CREATE TABLE releases (dno_id TEXT NOT NULL, group_id TEXT NOT NULL, interval_start INTEGER NOT NULL, outcome TEXT NOT NULL,
    PRIMARY KEY (dno_id, group_id, interval_start));`;

export class GroupBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): GroupBook {
    store.migrate('monitoring-1', SCHEMA);
    return new GroupBook(store);
  }

  /** The groups of one DNO, or of all (ordered by DNO, then group id). */
  groups(dnoId?: string): Group[] {
    const rows = (
      dnoId
        ? this.store
            .statement('SELECT dno_id, group_id, members FROM dno_groups WHERE dno_id = ? ORDER BY group_id')
            .all(dnoId)
        : this.store
            .statement('SELECT dno_id, group_id, members FROM dno_groups ORDER BY dno_id, group_id')
            .all()
    ) as { dno_id: string; group_id: string; members: string }[];
    return rows.map((r) => ({
      dnoId: r.dno_id,
      groupId: r.group_id,
      meters: JSON.parse(r.members) as string[],
    }));
  }

  /** Call inside a commit. */
  define(dnoId: string, groups: readonly { groupId: string; meters: string[] }[], at: number): void {
    const insert = this.store.statement(
      'INSERT INTO dno_groups (dno_id, group_id, members, defined_at) VALUES (?, ?, ?, ?)',
    );
    for (const g of groups) insert.run(dnoId, g.groupId, JSON.stringify(g.meters), at);
  }

  released(group: Group, intervalStart: number): boolean {
    return !!this.store
      .statement('SELECT 1 FROM releases WHERE dno_id = ? AND group_id = ? AND interval_start = ?')
      .get(group.dnoId, group.groupId, intervalStart);
  }

  /**
   * Start of the newest interval released for the group released least far (over groups with any
   * release); undefined before the first release. Retention keeps the readings after it.
   */
  slowestRelease(): number | undefined {
    const row = this.store
      .statement(
        `SELECT min(last) AS t FROM (SELECT (SELECT max(r.interval_start) FROM releases r
           WHERE r.dno_id = g.dno_id AND r.group_id = g.group_id) AS last FROM dno_groups g)`,
      )
      .get() as { t: number | null };
    return row.t ?? undefined;
  }

  /** Call inside a commit, with the release's other writes. */
  recordRelease(group: Group, intervalStart: number, outcome: string): void {
    this.store
      .statement('INSERT INTO releases (dno_id, group_id, interval_start, outcome) VALUES (?, ?, ?, ?)')
      .run(group.dnoId, group.groupId, intervalStart, outcome);
  }
}
