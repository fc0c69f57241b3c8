/**
 * Where a TRE keeps its shard's 32-byte key (issue 21): a row of its own store, which is encrypted
 * under the data key sealed to its TPM, so the shard key is wrapped to this TPM. The row is written
 * before the store's changes are journaled and never changed after, so it never reaches the journal
 * (no change of it is captured). Never logged.
 */
import type { Store } from '../store/store.js';
import { SHARD_KEY_BYTES } from './shard-journal.js';

const TABLE = 'shard_secret';

/** Creates the table (a migration, like every flow's). */
export function migrateShardKey(store: Store): void {
  store.migrate(
    'shard-key-1',
    `CREATE TABLE ${TABLE} (shard TEXT PRIMARY KEY, shard_key BLOB NOT NULL CHECK (length(shard_key) = ${SHARD_KEY_BYTES}))`,
  );
}

/** The key this store holds for `shard`, if any. */
export function storedShardKey(store: Store, shard: string): Buffer | undefined {
  migrateShardKey(store);
  const row = store.db.prepare(`SELECT shard_key AS k FROM ${TABLE} WHERE shard = ?`).get(shard) as
    | { k: Buffer }
    | undefined;
  return row ? Buffer.from(row.k) : undefined;
}

/** Keeps `key` for `shard` (call before the store's commits are journaled). */
export function keepShardKey(store: Store, shard: string, key: Buffer): void {
  migrateShardKey(store);
  store.db.prepare(`INSERT OR REPLACE INTO ${TABLE} (shard, shard_key) VALUES (?, ?)`).run(shard, key);
}
