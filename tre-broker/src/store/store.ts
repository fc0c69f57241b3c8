/**
 * The TRE's durable state: one SQLite file (WAL, synchronous=FULL) in the data directory.
 *
 * Group commit: flows queue their writes with `commit(fn)`; all writes queued in the same tick run
 * in one transaction, so one fsync serves many messages. Each write runs in its own savepoint,
 * so one failing write does not undo the others. A caller's promise settles only after COMMIT,
 * which is what lets the broker send the QoS1 PUBACK after the handler returns.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export type Db = Database.Database;

export class StoreError extends Error {
  override readonly name = 'StoreError';
  constructor(
    readonly code: 'STORAGE_UNAVAILABLE' | 'STORE_CLOSED',
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

interface PendingWrite {
  fn: (db: Db) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

export class Store {
  readonly db: Db;
  private queue: PendingWrite[] = [];
  private scheduled = false;
  private closed = false;
  /** Number of transactions committed and writes they carried, for benchmarks. */
  readonly stats = { transactions: 0, writes: 0 };

  constructor(
    readonly path: string,
    private readonly maxBatch = 2_000,
  ) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec('CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
  }

  static openIn(dataDir: string): Store {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return new Store(join(dataDir, 'tre.sqlite'));
  }

  private readonly statements = new Map<string, Database.Statement>();

  /** A prepared statement, prepared once per SQL text (preparing costs more than running on hot paths). */
  statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  /** Applies a flow's schema once (by name). */
  migrate(name: string, sql: string): void {
    const done = this.db.prepare('SELECT 1 FROM migrations WHERE name = ?').get(name);
    if (done) return;
    this.db.transaction(() => {
      this.db.exec(sql);
      this.db
        .prepare('INSERT INTO migrations (name, applied_at) VALUES (?, ?)')
        .run(name, new Date().toISOString());
    })();
  }

  /** Queues a write; resolves with its result after the batch that carries it has committed. */
  commit<T>(fn: (db: Db) => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreError('STORE_CLOSED', 'the store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (this.queue.length >= this.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Runs every queued write in one transaction now. */
  flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    if (batch.length === 0) return;
    this.queue = [];
    const results: { ok: boolean; value: unknown }[] = [];
    const run = this.db.transaction(() => {
      for (const w of batch) {
        try {
          results.push({ ok: true, value: this.db.transaction(() => w.fn(this.db))() });
        } catch (err) {
          results.push({ ok: false, value: err });
        }
      }
    });
    try {
      run();
    } catch (err) {
      const failure = new StoreError('STORAGE_UNAVAILABLE', `commit failed: ${(err as Error).message}`, err);
      for (const w of batch) w.reject(failure);
      return;
    }
    this.stats.transactions++;
    this.stats.writes += batch.length;
    batch.forEach((w, i) => {
      const r = results[i]!;
      if (r.ok) w.resolve(r.value);
      else w.reject(r.value);
    });
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.db.close();
  }
}
