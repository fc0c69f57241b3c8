/**
 * The TRE's durable state: one SQLite file (WAL, synchronous=FULL) in the data directory.
 *
 * Group commit: flows queue their writes with `commit(fn)`; all writes queued in the same tick run
 * in one transaction, so one fsync serves many messages. Each write runs in its own savepoint,
 * so one failing write does not undo the others. A caller's promise settles only after COMMIT,
 * which is what lets the broker send the QoS1 PUBACK after the handler returns.
 *
 * Encrypted at rest (SQLite3MultipleCiphers, `better-sqlite3-multiple-ciphers`): with a data key,
 * every page of the database and of its WAL is encrypted and authenticated with ChaCha20-Poly1305
 * under that raw 32-byte key (no passphrase KDF: the key is already random), so a copy of the data
 * directory (tre.sqlite, -wal, -shm) without the key reveals no reading, bid or pseudonym. Page 1
 * starts with a random salt instead of the "SQLite format 3" header. Temporary tables and sorts
 * stay in memory (`temp_store = MEMORY`): the cipher covers the database, its journal and WAL, not
 * SQLite's temporary files.
 *
 * A commit hook (`setCommitHook`; a shard's journal, change-journal.ts) adds a step to each batch:
 * its callers' promises then wait, after COMMIT, for the hook's asynchronous step (the journal
 * append), batch after batch in order. Without a hook nothing of this runs.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3-multiple-ciphers';

export type Db = Database.Database;

/** Length of the store's data key in bytes (a raw ChaCha20 key). */
export const DATA_KEY_BYTES = 32;

/**
 * The page cipher: ChaCha20-Poly1305 (SQLite3MultipleCiphers' default, sqleet's format), pinned so a
 * change of the library's default cannot change the file format. Authenticated (a wrong key or a
 * modified page is detected, not read as garbage) and fast without AES instructions (Pi-class CPUs).
 */
export const STORE_CIPHER = 'chacha20';

export interface StoreOptions {
  /**
   * The data key: 32 random bytes (unsealed from the TPM, or a development key file). Without one
   * the file is plain SQLite (in-memory stores, and until every opener passes a key). Ignored for
   * `:memory:`, which has nothing at rest.
   */
  dataKey?: Buffer;
  /** Writes per transaction at most (group commit flushes early at this size). */
  maxBatch?: number;
}

/**
 * `NOT_JOURNALED`: committed to this store but the commit hook's step failed (not copied to the
 * shard's journal): not acknowledged, and the next successful step carries it too.
 */
export type StoreErrorCode = 'STORAGE_UNAVAILABLE' | 'STORE_CLOSED' | 'STORE_KEY_MISMATCH' | 'NOT_JOURNALED';

export class StoreError extends Error {
  override readonly name = 'StoreError';
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** A step around each group commit (see `Store.setCommitHook`). */
export interface CommitHook {
  /** Runs last inside each batch's transaction, after its writes; a throw rolls the whole batch back. */
  beforeCommit(db: Db): void;
  /**
   * Called right after COMMIT, before any other batch can run; the batch's callers wait for the
   * promise, and its rejection fails their writes with `NOT_JOURNALED`.
   */
  afterCommit(): Promise<void>;
  /** Called before a migration that has not run yet is applied (e.g. to drop triggers). */
  migrating(): void;
  /** Called after it was applied, or failed (the schema may have changed). */
  migrated(): void;
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
  /** Told of each group commit: how long its transaction took, in seconds (the TRE's metrics). */
  onCommit: ((seconds: number) => void) | undefined;

  private readonly maxBatch: number;
  private hook: CommitHook | undefined;
  /** The last batch waiting for its hook's step: batches settle in commit order. */
  private settling: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    opts: StoreOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 2_000;
    if (opts.dataKey && opts.dataKey.length !== DATA_KEY_BYTES)
      throw new RangeError(
        `the store's data key must be ${DATA_KEY_BYTES} bytes, got ${opts.dataKey.length}`,
      );
    const keyed = !!opts.dataKey && path !== ':memory:';
    // A read-only connection first: one that fails must not touch the files (a read-write one that
    // cannot read page 1 may still checkpoint a copied WAL into the database file when it closes).
    if (path !== ':memory:' && existsSync(path)) {
      const probe = new Database(path, { readonly: true, fileMustExist: true });
      try {
        openWith(probe, path, keyed ? opts.dataKey : undefined);
      } finally {
        probe.close();
      }
    }
    this.db = new Database(path);
    try {
      openWith(this.db, path, keyed ? opts.dataKey : undefined);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('temp_store = MEMORY');
      this.db.exec('CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
    } catch (err) {
      this.db.close();
      throw err;
    }
    const savepoint = this.db.transaction((write: (db: Db) => unknown) => write(this.db));
    this.batchTransaction = this.db.transaction(
      (writes: PendingWrite[], out: { ok: boolean; value: unknown }[]) => {
        for (const w of writes) {
          try {
            out.push({ ok: true, value: savepoint(w.fn) });
          } catch (err) {
            out.push({ ok: false, value: err });
          }
        }
        this.hook?.beforeCommit(this.db);
      },
    );
  }

  /** The store of a data directory, `<dataDir>/tre.sqlite`: always encrypted, under the data key it was made with. */
  static openIn(dataDir: string, opts: { dataKey: Buffer }): Store {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return new Store(join(dataDir, 'tre.sqlite'), { dataKey: opts.dataKey });
  }

  private readonly statements = new Map<string, Database.Statement>();

  /**
   * The batch's transaction: every write in a savepoint of its own (a nested transaction function),
   * failures kept per write. Made once: better-sqlite3 builds wrapper functions per `transaction()`.
   */
  private readonly batchTransaction: (writes: PendingWrite[], out: { ok: boolean; value: unknown }[]) => void;

  /** A prepared statement, prepared once per SQL text (preparing costs more than running on hot paths). */
  statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * Sets (or with `undefined` removes) the step around each group commit. Set it between batches,
   * e.g. at start before the first write: a batch already committed keeps the hook it had.
   */
  setCommitHook(hook: CommitHook | undefined): void {
    this.hook = hook;
  }

  /** Resolves once every committed batch has settled (its hook's step done or failed). */
  settled(): Promise<void> {
    return this.settling;
  }

  /** Applies a flow's schema once (by name). */
  migrate(name: string, sql: string): void {
    const done = this.db.prepare('SELECT 1 FROM migrations WHERE name = ?').get(name);
    if (done) return;
    this.hook?.migrating();
    try {
      this.db.transaction(() => {
        this.db.exec(sql);
        this.db
          .prepare('INSERT INTO migrations (name, applied_at) VALUES (?, ?)')
          .run(name, new Date().toISOString());
      })();
    } finally {
      this.hook?.migrated();
    }
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
    const started = performance.now();
    try {
      this.batchTransaction(batch, results);
    } catch (err) {
      const failure = new StoreError('STORAGE_UNAVAILABLE', `commit failed: ${(err as Error).message}`, err);
      for (const w of batch) w.reject(failure);
      return;
    }
    this.stats.transactions++;
    this.stats.writes += batch.length;
    this.onCommit?.((performance.now() - started) / 1000);
    if (this.hook) this.settleAfter(this.hook, batch, results);
    else settle(batch, results);
  }

  /**
   * Settles the batch once its hook's step (started now) and every batch before it have. If the
   * step fails, the writes committed in it fail with NOT_JOURNALED; those that had failed keep their error.
   */
  private settleAfter(hook: CommitHook, batch: PendingWrite[], results: { ok: boolean; value: unknown }[]) {
    let step: Promise<unknown>;
    try {
      step = hook.afterCommit().then(
        () => undefined,
        (err: unknown) => new JournalFailure(err),
      );
    } catch (err) {
      step = Promise.resolve(new JournalFailure(err));
    }
    this.settling = this.settling
      .then(() => step)
      .then((outcome) => {
        if (!(outcome instanceof JournalFailure)) return settle(batch, results);
        const failure = new StoreError(
          'NOT_JOURNALED',
          `committed here but not journaled (${(outcome.cause as Error)?.message ?? outcome.cause}): not acknowledged; retry, the next journal entry carries it`,
          outcome.cause,
        );
        batch.forEach((w, i) => {
          const r = results[i]!;
          w.reject(r.ok ? failure : r.value);
        });
      });
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.db.close();
  }
}

/** A hook step's rejection, held as a value so it is handled while earlier batches settle. */
class JournalFailure {
  constructor(readonly cause: unknown) {}
}

function settle(batch: PendingWrite[], results: { ok: boolean; value: unknown }[]): void {
  batch.forEach((w, i) => {
    const r = results[i]!;
    if (r.ok) w.resolve(r.value);
    else w.reject(r.value);
  });
}

/**
 * Sets the cipher and the raw key (SQLCipher's `x'<hex>'` form: the bytes are the key, no KDF), before
 * any statement that reads the file (choosing the cipher reads nothing), then reads page 1: the key
 * is only checked there, so a wrong one fails here with a clear error, not at a flow's first query.
 */
function openWith(db: Db, path: string, dataKey: Buffer | undefined): void {
  if (dataKey) {
    db.pragma(`cipher = '${STORE_CIPHER}'`);
    const raw = Buffer.from(`x'${dataKey.toString('hex')}'`, 'latin1');
    try {
      db.key(raw); // sqlite3_key: the key never goes through SQL text
    } finally {
      raw.fill(0);
    }
  }
  try {
    db.prepare('SELECT count(*) FROM sqlite_master').get();
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'SQLITE_NOTADB') throw err;
    throw new StoreError(
      'STORE_KEY_MISMATCH',
      dataKey
        ? `${path} cannot be read with this data key: the data directory was encrypted with another key ` +
            '(a different TPM or TRE measurement, or a data directory copied from another machine), ' +
            'or it is not an encrypted TRE store (a plaintext or damaged file); it was left unchanged'
        : `${path} is encrypted (or not a SQLite file) and no data key was given; it was left unchanged`,
      err,
    );
  }
}
