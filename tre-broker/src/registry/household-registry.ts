/**
 * The household registry: which meters exist, their supplier, DNO, installed capacity and billing
 * account. Written by the regulator: over MQTT as a regulator-signed update (JWS, `registryUpdate`),
 * accepted only when its `issuedAt` is newer than the last one accepted (`registry_updates`), so an
 * older update can never be replayed over a newer one; or offline with `tre registry` on the TRE
 * box. Lookups are cached (`get`, a bounded LRU): the cache is dropped whenever this TRE changes the
 * registry (`upsert`, a registry update) and, checked once per event-loop tick with SQLite's
 * `data_version`, whenever another connection (the CLI) committed to the store, so changes made by
 * the CLI apply from the next tick.
 *
 * In a cluster of shards (issue 21) each household names its shard: a shard keeps in `households`
 * only its own (they alone may connect; their accounts are stored nowhere else), and in
 * `household_shards` where every household of the cluster lives, with its DNO, so DNO groups are
 * checked across shards and each flow knows which shard holds a member (`shardOf`). An update
 * moving a household to another shard deletes it here; one without a shard is refused.
 */
import { type Household, householdSchema, MAX_BULK_PAYLOAD_BYTES, registryUpdateSchema } from '@tre/protocol';
import { hasSealedSecrets } from '../attestation/sealed-secrets.js';
import { developmentDataKey } from '../attestation/tre-enrollment.js';
import {
  type HandlerResult,
  type InboundMessage,
  type MessageRouter,
  refusal,
} from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import { type Db, Store } from '../store/store.js';
import { TreConfigError } from '../tre-config-error.js';

export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  constructor(
    readonly code: 'INVALID_HOUSEHOLD' | 'CSV_INVALID',
    message: string,
  ) {
    super(message);
  }
}

const CSV_COLUMNS = ['meterId', 'supplierId', 'dnoId', 'capacityW', 'account'] as const;
/** The optional last column of the CSV: the household's shard in a cluster. */
const CSV_SHARD = 'shard';

/** Households kept by the lookup cache at most. */
export const REGISTRY_CACHE_SIZE = 50_000;

export class HouseholdRegistry {
  /** Recent lookups, least recently used first; `null` is a meter known not to be registered. */
  private readonly cache = new Map<string, Household | null>();
  /** `PRAGMA data_version` when the cache was last checked; it changes when another connection commits. */
  private dataVersion: unknown;
  private checkedThisTick = false;

  constructor(
    private readonly store: Store,
    private readonly cacheSize = REGISTRY_CACHE_SIZE,
    /** This TRE's shard in a cluster; undefined for a single TRE. */
    readonly shard?: string,
  ) {
    store.migrate(
      'registry-1',
      `CREATE TABLE households (
         meter_id TEXT PRIMARY KEY,
         supplier_id TEXT NOT NULL,
         dno_id TEXT NOT NULL,
         capacity_w INTEGER NOT NULL CHECK (capacity_w > 0),
         account TEXT NOT NULL
       );
       CREATE INDEX households_dno ON households (dno_id);
       CREATE INDEX households_supplier ON households (supplier_id);`,
    );
    store.migrate(
      'registry-2',
      'CREATE TABLE registry_updates (id INTEGER PRIMARY KEY CHECK (id = 1), issued_at TEXT NOT NULL);',
    );
    store.migrate(
      'registry-3',
      `CREATE TABLE household_shards (
         meter_id TEXT PRIMARY KEY,
         dno_id TEXT NOT NULL,
         shard TEXT NOT NULL
       );
       CREATE INDEX household_shards_dno ON household_shards (dno_id);`,
    );
  }

  /** Serves the regulator's `registry` topic. */
  serve(router: MessageRouter): void {
    router.on('registry', async (msg) => {
      try {
        return await this.handle(msg);
      } finally {
        this.invalidate(); // after the commit (or its failure): nothing uncommitted stays cached
      }
    });
  }

  /** Drops every cached lookup (the registry changed). */
  invalidate(): void {
    this.cache.clear();
  }

  private async handle(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(
      msg,
      'registryUpdate',
      registryUpdateSchema,
      undefined,
      MAX_BULK_PAYLOAD_BYTES,
    );
    if (!signed.ok) return signed.refusal;
    const { households, issuedAt } = signed.content;
    const unplaced = this.unplaced(households);
    if (unplaced) return refusal(signed.requestId, 'MALFORMED', unplaced);
    const outcome = await this.store.commit((db) => {
      const last = db.prepare('SELECT issued_at FROM registry_updates WHERE id = 1').get() as
        | { issued_at: string }
        | undefined;
      if (last && Date.parse(issuedAt) <= Date.parse(last.issued_at)) return { stale: last.issued_at };
      db.prepare(
        'INSERT INTO registry_updates (id, issued_at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET issued_at = excluded.issued_at',
      ).run(issuedAt);
      return { registered: upsertAll(db, households, this.shard) };
    });
    if ('stale' in outcome)
      return refusal(
        signed.requestId,
        'REPLAYED',
        `a registry update issued at ${outcome.stale} was accepted; sign this one with a later issuedAt`,
      );
    return {
      status: 'accepted',
      requestId: signed.requestId,
      message: `${outcome.registered} households registered`,
    };
  }

  get(meterId: string): Household | undefined {
    this.revalidate();
    const hit = this.cache.get(meterId);
    if (hit !== undefined) {
      this.cache.delete(meterId); // most recently used goes last
      this.cache.set(meterId, hit);
      return hit ?? undefined;
    }
    const household = this.lookup(meterId);
    this.cache.set(meterId, household ?? null);
    if (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    return household;
  }

  /** Once per tick: drops the cache if another connection (e.g. `tre registry`) committed since. */
  private revalidate(): void {
    if (this.checkedThisTick) return;
    this.checkedThisTick = true;
    setImmediate(() => {
      this.checkedThisTick = false;
    });
    const version = this.store.statement('PRAGMA data_version').pluck().get();
    if (version !== this.dataVersion) {
      this.cache.clear();
      this.dataVersion = version;
    }
  }

  private lookup(meterId: string): Household | undefined {
    const row = this.store
      .statement(
        'SELECT meter_id, supplier_id, dno_id, capacity_w, account FROM households WHERE meter_id = ?',
      )
      .get(meterId) as
      | { meter_id: string; supplier_id: string; dno_id: string; capacity_w: number; account: string }
      | undefined;
    // Frozen: one cached object is handed to every caller.
    return (
      row &&
      Object.freeze({
        meterId: row.meter_id,
        supplierId: row.supplier_id,
        dnoId: row.dno_id,
        capacityW: row.capacity_w,
        account: row.account,
      })
    );
  }

  /** Meters registered with a DNO (the only meters it may group), in every shard of a cluster. */
  metersOfDno(dnoId: string): Set<string> {
    const table = this.shard === undefined ? 'households' : 'household_shards';
    const rows = this.store.db.prepare(`SELECT meter_id FROM ${table} WHERE dno_id = ?`).all(dnoId) as {
      meter_id: string;
    }[];
    return new Set(rows.map((r) => r.meter_id));
  }

  /** The shard a household of the cluster lives in (undefined for a single TRE or an unknown meter). */
  shardOf(meterId: string): string | undefined {
    return this.store
      .statement('SELECT shard FROM household_shards WHERE meter_id = ?')
      .pluck()
      .get(meterId) as string | undefined;
  }

  /** Every shard holding a registered household, sorted. */
  shardsWithHouseholds(): string[] {
    return this.store
      .statement('SELECT DISTINCT shard FROM household_shards ORDER BY shard')
      .pluck()
      .all() as string[];
  }

  /** Why these households cannot be registered in this TRE's cluster, if they cannot. */
  private unplaced(households: readonly Household[]): string | undefined {
    if (this.shard === undefined) return undefined;
    const without = households.find((h) => h.shard === undefined);
    return (
      without &&
      `household ${without.meterId} names no shard: in a cluster of TREs every household lives in one (give each a shard)`
    );
  }

  metersOfSupplier(supplierId: string): Household[] {
    const rows = this.store.db
      .prepare('SELECT meter_id FROM households WHERE supplier_id = ? ORDER BY meter_id')
      .all(supplierId) as {
      meter_id: string;
    }[];
    return rows.map((r) => this.get(r.meter_id)!);
  }

  count(): number {
    return (this.store.db.prepare('SELECT count(*) AS n FROM households').get() as { n: number }).n;
  }

  /** Adds or updates households in one transaction. */
  upsert(households: Household[]): Promise<number> {
    for (const h of households) {
      const parsed = householdSchema.safeParse(h);
      if (!parsed.success)
        throw new RegistryError(
          'INVALID_HOUSEHOLD',
          `household ${JSON.stringify(h.meterId)}: ${parsed.error.issues[0]?.message}`,
        );
    }
    const unplaced = this.unplaced(households);
    if (unplaced) throw new RegistryError('INVALID_HOUSEHOLD', unplaced);
    return this.store.commit((db) => upsertAll(db, households, this.shard)).finally(() => this.invalidate());
  }

  /** Parses `meterId,supplierId,dnoId,capacityW,account[,shard]` CSV (with that header line). */
  static parseCsv(text: string, file = 'households.csv'): Household[] {
    const lines = text.split(/\r?\n/);
    const header = lines[0]?.split(',').map((s) => s.trim());
    const withShard = header?.length === CSV_COLUMNS.length + 1 && header.at(-1) === CSV_SHARD;
    const columns = CSV_COLUMNS.length + (withShard ? 1 : 0);
    if (!header || CSV_COLUMNS.some((c, i) => header[i] !== c) || header.length !== columns) {
      throw new RegistryError(
        'CSV_INVALID',
        `${file}:1: the header must be ${CSV_COLUMNS.join(',')} (and ,${CSV_SHARD} for a cluster of TREs)`,
      );
    }
    const out: Household[] = [];
    lines.slice(1).forEach((line, i) => {
      if (line.trim() === '') return;
      const cells = line.split(',').map((s) => s.trim());
      const candidate = {
        meterId: cells[0],
        supplierId: cells[1],
        dnoId: cells[2],
        capacityW: /^\d+$/.test(cells[3] ?? '') ? Number(cells[3]) : cells[3],
        account: cells[4],
        ...(withShard && { shard: cells[5] }),
      };
      const parsed = householdSchema.safeParse(candidate);
      if (cells.length !== columns || !parsed.success) {
        const issue = parsed.success
          ? `expected ${columns} columns`
          : `${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`;
        throw new RegistryError('CSV_INVALID', `${file}:${i + 2}: ${issue}`);
      }
      out.push(parsed.data);
    });
    return out;
  }
}

/** Stores households: in `households` those living here (all of them for a single TRE, `shard` undefined). */
function upsertAll(db: Db, households: Household[], shard: string | undefined): number {
  const stmt = db.prepare(
    `INSERT INTO households (meter_id, supplier_id, dno_id, capacity_w, account) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (meter_id) DO UPDATE SET supplier_id = excluded.supplier_id, dno_id = excluded.dno_id,
       capacity_w = excluded.capacity_w, account = excluded.account`,
  );
  const placed = db.prepare(
    `INSERT INTO household_shards (meter_id, dno_id, shard) VALUES (?, ?, ?)
     ON CONFLICT (meter_id) DO UPDATE SET dno_id = excluded.dno_id, shard = excluded.shard`,
  );
  const movedAway = db.prepare('DELETE FROM households WHERE meter_id = ?');
  for (const h of households) {
    if (h.shard !== undefined) placed.run(h.meterId, h.dnoId, h.shard);
    if (shard === undefined || h.shard === shard)
      stmt.run(h.meterId, h.supplierId, h.dnoId, h.capacityW, h.account);
    else movedAway.run(h.meterId);
  }
  return households.length;
}

/**
 * Registers households in a development TRE's data directory (no TPM: its store's key is the
 * development key file), with or without the TRE running (it reads the registry on every lookup).
 * A store sealed to a TRE's measurement is refused: its households come from the regulator's
 * signed registry updates. Returns how many were registered and the registry's size.
 */
export async function registerHouseholds(
  dataDir: string,
  households: Household[],
): Promise<{ registered: number; total: number }> {
  if (hasSealedSecrets(dataDir))
    throw new TreConfigError(
      `the store in ${dataDir} is sealed to the TRE's measurement: register households with the regulator's signed registry update (topic tre/v1/regulator/<id>/registry), not from this machine`,
    );
  const store = Store.openIn(dataDir, { dataKey: (await developmentDataKey(dataDir)).key });
  try {
    const registry = new HouseholdRegistry(store);
    return { registered: await registry.upsert(households), total: registry.count() };
  } finally {
    store.close();
  }
}
