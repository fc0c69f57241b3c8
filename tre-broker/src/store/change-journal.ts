/**
 * Every row change of the store's commits as replayable SQL (issue 21: a shard's journal, which a
 * standby TRE replays to take the shard over).
 *
 * Capture is generic: a TEMP trigger per table and operation (built from `pragma_table_list` and
 * `table_xinfo`, rebuilt after each migration; rowid and WITHOUT ROWID tables) appends to the
 * `change_outbox` table the statement that reproduces the change, each value written by `quote()`
 * (text holding a NUL as a cast blob): insert and update as `INSERT OR REPLACE` of the whole row
 * (with its rowid), an update that changed the key also as a `DELETE` of the old key, a delete as
 * `DELETE ... WHERE <rowid or primary key>`. Cascades fire the triggers of the rows they touch, so
 * they are replayed as their own statements, with foreign keys off. Not captured: `migrations`,
 * this module's tables, `sqlite_*` (an explicit rowid keeps AUTOINCREMENT counters equal).
 *
 * The outbox is a table of the store, written in the commit's own transaction: a write rolled back
 * in its savepoint takes its changes with it, and a change committed but not yet journaled (the
 * journal was unreachable, or the TRE died before the append) is still there after a restart, so
 * the next append carries it. Changes are numbered (the outbox's AUTOINCREMENT id, continued across
 * the shard's successive writers); each commit's rows are read into memory right after it (`take`),
 * and the rows up to a journaled number are deleted by a later commit. Install capture only after
 * the store's last replay: its triggers would capture the replayed rows as new changes.
 *
 * `change_journal` holds the store's journal position: the entry (stream sequence) and change
 * number it has everything up to, and its writer id (random per store). The journal carries rows,
 * not schema: every TRE of a shard runs the same build and so the same migrations, each on its own
 * store; a migration's own changes are not captured (triggers are dropped while it runs).
 */
import type { CommitHook, Db, Store } from './store.js';

const OUTBOX = 'change_outbox';
const STATE = 'change_journal';
/** Tables whose changes are never captured nor compared. */
export const UNJOURNALED_TABLES: readonly string[] = ['migrations', OUTBOX, STATE];

const SCHEMA = `CREATE TABLE ${OUTBOX} (id INTEGER PRIMARY KEY AUTOINCREMENT, sql TEXT NOT NULL);
  CREATE TABLE ${STATE} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    writer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    up_to INTEGER NOT NULL
  );
  INSERT INTO ${STATE} (id, writer, seq, up_to) VALUES (1, lower(hex(randomblob(16))), 0, 0);`;

const TRIGGER_PREFIX = 'tre_capture_';

/** Changes of one or more commits, in commit order. */
export interface ChangeBatch {
  /** The store that wrote them (`change_journal.writer`). */
  writer: string;
  /** The number of the last change. */
  upTo: number;
  sqls: string[];
}

/** Where a store is in its shard's journal: every entry up to `seq`, every change up to `upTo`. */
export interface JournalPosition {
  seq: number;
  upTo: number;
}

/** Where a batch of changes is stored durably (the shard's journal, cluster/shard-journal.ts). */
export interface ChangeSink {
  /** Stores the batch; resolves with its position once it is durable, rejects if it may not be. */
  append(batch: ChangeBatch): Promise<JournalPosition>;
}

export class ChangeJournalError extends Error {
  override readonly name = 'ChangeJournalError';
  constructor(
    readonly code: 'UNSUPPORTED_TABLE' | 'NOT_A_CHANGE' | 'DIVERGED',
    message: string,
  ) {
    super(message);
  }
}

/** Creates the outbox and the position of the store (once). */
export function migrateChangeJournal(store: Store): void {
  store.migrate('change-journal-1', SCHEMA);
}

/** The store's writer id and journal position. */
export function journalState(store: Store): { writer: string; position: JournalPosition } {
  migrateChangeJournal(store);
  const row = store.db.prepare(`SELECT writer, seq, up_to AS upTo FROM ${STATE}`).get() as {
    writer: string;
    seq: number;
    upTo: number;
  };
  return { writer: row.writer, position: { seq: row.seq, upTo: row.upTo } };
}

// ---- triggers (pure: from the table's shape to SQL) ----

export interface TableShape {
  name: string;
  withoutRowid: boolean;
  /** Stored columns (generated ones are left out: they are recomputed). */
  columns: string[];
  /** The primary key's columns in key order (WITHOUT ROWID tables). */
  key: string[];
}

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;
const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;

/** SQL text that renders `expr`'s value as a literal; quote() stops text at a NUL, so such text goes as a blob. */
const literalOf = (expr: string) =>
  `CASE WHEN typeof(${expr}) = 'text' AND instr(${expr}, char(0)) THEN 'CAST(' || quote(CAST(${expr} AS BLOB)) || ' AS TEXT)' ELSE quote(${expr}) END`;

/** An SQL expression that builds the statement rewriting the row `ref` (NEW) whole. */
function upsertOf(t: TableShape, ref: string): string {
  const cols = t.withoutRowid ? t.columns : ['rowid', ...t.columns];
  const head = `INSERT OR REPLACE INTO ${ident(t.name)} (${cols.map(ident).join(', ')}) VALUES (`;
  const values = cols.map((c) => literalOf(`${ref}.${ident(c)}`)).join(` || ', ' || `);
  return `${literal(head)} || ${values} || ')'`;
}

/** An SQL expression that builds the statement deleting the row `ref` (OLD) by its key. */
function deleteOf(t: TableShape, ref: string): string {
  const key = t.withoutRowid ? t.key : ['rowid'];
  const where = key.map((c) => `${literal(`${ident(c)} = `)} || ${literalOf(`${ref}.${ident(c)}`)}`);
  return `${literal(`DELETE FROM ${ident(t.name)} WHERE `)} || ${where.join(` || ' AND ' || `)}`;
}

/** The CREATE TEMP TRIGGER statements that capture every change of the table. */
export function captureTriggers(t: TableShape): string[] {
  const record = (expr: string) => `INSERT INTO ${OUTBOX} (sql) VALUES (${expr});`;
  const key = t.withoutRowid ? t.key : ['rowid'];
  const keyChanged = key.map((c) => `OLD.${ident(c)} IS NOT NEW.${ident(c)}`).join(' OR ');
  const name = (op: string) => ident(`${TRIGGER_PREFIX}${t.name}_${op}`);
  const on = ident(t.name);
  return [
    `CREATE TEMP TRIGGER ${name('insert')} AFTER INSERT ON ${on} BEGIN ${record(upsertOf(t, 'NEW'))} END`,
    `CREATE TEMP TRIGGER ${name('update')} AFTER UPDATE ON ${on} BEGIN
       INSERT INTO ${OUTBOX} (sql) SELECT ${deleteOf(t, 'OLD')} WHERE ${keyChanged};
       ${record(upsertOf(t, 'NEW'))}
     END`,
    `CREATE TEMP TRIGGER ${name('delete')} AFTER DELETE ON ${on} BEGIN ${record(deleteOf(t, 'OLD'))} END`,
  ];
}

/** The shape of every journaled table of the main database. */
export function tableShapes(db: Db): TableShape[] {
  const tables = db
    .prepare(
      `SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name`,
    )
    .all() as { name: string; wr: number }[];
  return tables
    .filter((t) => !UNJOURNALED_TABLES.includes(t.name))
    .map(({ name, wr }) => {
      const cols = db.prepare('SELECT name, pk, hidden FROM pragma_table_xinfo(?, ?)').all(name, 'main') as {
        name: string;
        pk: number;
        hidden: number;
      }[];
      const stored = cols.filter((c) => c.hidden === 0);
      const withoutRowid = wr === 1;
      if (!withoutRowid && stored.some((c) => ['rowid', 'oid', '_rowid_'].includes(c.name.toLowerCase())))
        throw new ChangeJournalError(
          'UNSUPPORTED_TABLE',
          `table ${name} has a column named like its rowid; rename it (the journal names the rowid)`,
        );
      if (cols.some((c) => c.hidden === 1))
        throw new ChangeJournalError(
          'UNSUPPORTED_TABLE',
          `table ${name} has hidden columns (a virtual table?)`,
        );
      return {
        name,
        withoutRowid,
        columns: stored.map((c) => c.name),
        key: stored
          .filter((c) => c.pk > 0)
          .sort((a, b) => a.pk - b.pk)
          .map((c) => c.name),
      };
    });
}

// ---- capture on a store ----

/** The triggers on a store, and its outbox. */
export class ChangeCapture {
  private installed = false;
  /** What the journal is known to hold; what `change_journal` says (and what a commit in flight will). */
  private journaledAt: JournalPosition;
  private recorded: JournalPosition;
  private recording: JournalPosition | undefined;
  /** The last change read from the outbox, and those read but not journaled yet. */
  private taken: number;
  private readonly pendingIds: number[] = [];
  private readonly pendingSqls: string[] = [];
  readonly writer: string;

  private constructor(
    private readonly store: Store,
    state: { writer: string; position: JournalPosition },
  ) {
    this.writer = state.writer;
    this.journaledAt = state.position;
    this.recorded = state.position;
    this.taken = state.position.upTo;
  }

  /**
   * Starts capturing on `store` (after its migrations). `after`: where the journal is (the last
   * entry this store has replayed or knows it wrote); default the store's own position. Change
   * numbers continue after it; outbox rows up to it are dropped by the next commit.
   */
  static install(store: Store, opts: { after?: JournalPosition } = {}): ChangeCapture {
    const state = journalState(store);
    const capture = new ChangeCapture(store, state);
    if (opts.after) capture.journaledAt = opts.after;
    const upTo = capture.journaledAt.upTo;
    capture.taken = upTo;
    // Continue the shard's numbering (a standby taking over starts from the last writer's).
    const db = store.db;
    const bumped = db
      .prepare('UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?')
      .run(upTo, OUTBOX).changes;
    if (bumped === 0) db.prepare('INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)').run(OUTBOX, upTo);
    capture.createTriggers();
    capture.take(); // what a previous run committed and could not journal
    return capture;
  }

  /** Drops the triggers (while a migration runs, or for good). */
  dropTriggers(): void {
    const names = this.store.db
      .prepare(`SELECT name FROM temp.sqlite_master WHERE type = 'trigger' AND name LIKE ?`)
      .all(`${TRIGGER_PREFIX}%`) as { name: string }[];
    for (const { name } of names) this.store.db.exec(`DROP TRIGGER temp.${ident(name)}`);
    this.installed = false;
  }

  /** (Re)creates the triggers from the tables as they are now. */
  createTriggers(): void {
    if (this.installed) this.dropTriggers();
    const db = this.store.db;
    db.transaction(() => {
      for (const t of tableShapes(db)) for (const sql of captureTriggers(t)) db.exec(sql);
    })();
    this.installed = true;
  }

  /**
   * Reads the changes captured since the last take into memory (right after each commit, while the
   * store is open: an append that runs later, even after `close`, needs no read).
   */
  take(): void {
    const rows = this.store
      .statement(`SELECT id, sql FROM ${OUTBOX} WHERE id > ? ORDER BY id`)
      .raw()
      .all(this.taken) as [number, string][];
    for (const [id, sql] of rows) {
      this.pendingIds.push(id);
      this.pendingSqls.push(sql);
    }
    if (rows.length > 0) this.taken = rows.at(-1)![0];
  }

  /** Every change taken and not yet journaled, in order, as one batch (undefined: none). */
  unjournaled(): ChangeBatch | undefined {
    if (this.pendingIds.length === 0) return undefined;
    return { writer: this.writer, upTo: this.pendingIds.at(-1)!, sqls: [...this.pendingSqls] };
  }

  /** The journal holds every change up to `position.upTo` (from an acknowledged append). */
  journaled(position: JournalPosition): void {
    if (position.upTo < this.journaledAt.upTo || position.seq < this.journaledAt.seq) return;
    this.journaledAt = position;
    let n = 0;
    while (n < this.pendingIds.length && this.pendingIds[n]! <= position.upTo) n++;
    this.pendingIds.splice(0, n);
    this.pendingSqls.splice(0, n);
  }

  get position(): JournalPosition {
    return this.journaledAt;
  }

  /** Inside a commit: forgets journaled outbox rows and records the position (`committed` confirms). */
  recordPosition(db: Db): void {
    const at = this.journaledAt;
    this.recording = undefined;
    if (at.seq === this.recorded.seq && at.upTo === this.recorded.upTo) return;
    db.prepare(`DELETE FROM ${OUTBOX} WHERE id <= ?`).run(at.upTo);
    db.prepare(`UPDATE ${STATE} SET seq = ?, up_to = ?`).run(at.seq, at.upTo);
    this.recording = at;
  }

  /** The commit that recorded the position committed (one rolled back is recorded again by the next). */
  committed(): void {
    if (this.recording) this.recorded = this.recording;
    this.recording = undefined;
  }
}

/**
 * The commit hook that journals every commit: after COMMIT it takes the commit's changes and
 * appends everything not journaled yet (this commit's, and any a failed append left) to the sink,
 * one append at a time; the commit's callers wait for it. A commit settles only once everything
 * committed up to it is journaled, so a duplicate answered from a change still unjournaled is not
 * acknowledged either. A failed append fails the commits waiting for it (NOT_JOURNALED); the next
 * carries their changes. Once the sink refuses for good (fenced), every commit fails: stop acking.
 */
export class JournaledCommits implements CommitHook {
  private tail: Promise<void> = Promise.resolve();

  constructor(
    private readonly capture: ChangeCapture,
    private readonly sink: ChangeSink,
  ) {}

  /** Installs capture and this hook on `store`; `after` as for `ChangeCapture.install`. */
  static attach(store: Store, sink: ChangeSink, opts: { after?: JournalPosition } = {}): JournaledCommits {
    const hook = new JournaledCommits(ChangeCapture.install(store, opts), sink);
    store.setCommitHook(hook);
    return hook;
  }

  get position(): JournalPosition {
    return this.capture.position;
  }

  beforeCommit(db: Db): void {
    this.capture.recordPosition(db);
  }

  afterCommit(): Promise<void> {
    this.capture.committed();
    this.capture.take();
    return this.enqueueAppend();
  }

  migrating(): void {
    this.capture.dropTriggers();
  }

  migrated(): void {
    this.capture.createTriggers();
  }

  /** Appends now whatever is not journaled (e.g. left by a failed append) without waiting for a commit. */
  flush(): Promise<void> {
    this.capture.take();
    return this.enqueueAppend();
  }

  private enqueueAppend(): Promise<void> {
    const run = this.tail.then(() => this.appendUnjournaled());
    this.tail = run.catch(() => {});
    return run;
  }

  private async appendUnjournaled(): Promise<void> {
    const batch = this.capture.unjournaled();
    if (!batch) return;
    this.capture.journaled(await this.sink.append(batch));
  }
}

// ---- replay ----

const CHANGE = /^(INSERT OR REPLACE INTO|DELETE FROM) "/;

/**
 * Replays changes into `db` in one transaction, foreign keys off (cascades were captured as their
 * own deletes); with `position`, records it in the same transaction (a standby following the journal).
 */
export function applyChanges(db: Db, sqls: readonly string[], position?: JournalPosition): void {
  const fk = db.pragma('foreign_keys', { simple: true }) as number;
  db.pragma('foreign_keys = OFF');
  try {
    db.transaction(() => {
      for (const sql of sqls) {
        if (!CHANGE.test(sql))
          throw new ChangeJournalError('NOT_A_CHANGE', `not a captured change: ${sql.slice(0, 40)}`);
        db.prepare(sql).run();
      }
      if (position) db.prepare(`UPDATE ${STATE} SET seq = ?, up_to = ?`).run(position.seq, position.upTo);
    })();
  } finally {
    if (fk) db.pragma('foreign_keys = ON');
  }
}

/** A complete journal entry as `resumeWriting` sees it. */
export interface JournalEntryMeta {
  seq: number;
  writer: string;
  upTo: number;
}

export type ResumeDecision =
  /** Every entry after the store's position is its own: write after `position`. */
  | { kind: 'write'; position: JournalPosition }
  /** Another writer wrote after us and we hold nothing unjournaled: replay from `fromSeq`, then write. */
  | { kind: 'replay'; fromSeq: number }
  /** We committed changes the journal lacks while another writer went on without them. */
  | { kind: 'diverged'; message: string };

/**
 * How a store with its own journal position rejoins the journal as writer (a primary restarted, a
 * standby taking over): from the entries after its recorded position (its position is recorded a
 * commit late, so its own last entries may be among them) and the number of its last captured change.
 */
export function resumeWriting(
  local: { writer: string; position: JournalPosition; lastChange: number },
  after: readonly JournalEntryMeta[],
): ResumeDecision {
  let position = local.position;
  let i = 0;
  for (; i < after.length && after[i]!.writer === local.writer; i++)
    position = { seq: after[i]!.seq, upTo: after[i]!.upTo };
  if (i === after.length) return { kind: 'write', position };
  if (local.lastChange > position.upTo)
    return {
      kind: 'diverged',
      message: `this store committed changes ${position.upTo + 1}..${local.lastChange} that the journal lacks, and another writer appended entry ${after[i]!.seq} after them: rebuild this store from the journal`,
    };
  return { kind: 'replay', fromSeq: after[i]!.seq };
}

/** The number of the last change captured in `store` (0 if none). */
export function lastChange(store: Store): number {
  const row = store.db.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').get(OUTBOX) as
    | { seq: number }
    | undefined;
  return row?.seq ?? 0;
}
