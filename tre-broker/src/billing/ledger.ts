/**
 * The bill ledger, one line per (household, kind, reference, interval), in integer micro-minor
 * currency units: an energy line is Wh x (minor units per MWh), exact. Demand-response credits are
 * negative lines (kind `dr-credit`, reference = event id) and their reversals positive lines
 * (`dr-reversal`). The primary key makes every line idempotent: a resent reading or a repeated
 * credit can never be billed twice. A line belongs to the first statement issued after it was
 * written (its `statement_id` is set then), so a late reading is billed in the next statement
 * instead of being lost; each statement rounds its sum half-to-even to minor units, once. Energy
 * lines carry the reading's length in minutes (what the household's copy counts as billed time).
 *
 * A DR event's lines are referenced by `drRef` (its id, and its revision once the DSM modified it).
 * When the DSM cancels or modifies an event after accepting bids, each household's lines of that
 * revision are compensated exactly by one more line (`postCompensation`: a `dr-reversal` of minus
 * their sum, reference `<drRef>:void`): nothing is deleted or changed, and the sum is back to zero.
 */
import type { Db, Store } from '../store/store.js';

export type LineKind = 'energy' | 'dr-credit' | 'dr-reversal';

const LEDGER_SCHEMA = `CREATE TABLE IF NOT EXISTS ledger (
    meter_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('energy', 'dr-credit', 'dr-reversal')),
    ref TEXT NOT NULL,
    interval_start INTEGER NOT NULL,
    amount_micro INTEGER NOT NULL,
    statement_id TEXT,
    PRIMARY KEY (meter_id, kind, ref, interval_start)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS ledger_open ON ledger (meter_id) WHERE statement_id IS NULL;`;

/** Creates the ledger once (at TRE start); both billing and demand response post to it. */
export function migrateLedger(store: Store): void {
  store.migrate('ledger-1', LEDGER_SCHEMA);
  // Energy lines written before readings had a length in the ledger were 15-minute readings.
  store.migrate(
    'ledger-2',
    `ALTER TABLE ledger ADD COLUMN minutes INTEGER; UPDATE ledger SET minutes = 15 WHERE kind = 'energy';`,
  );
  // The DR lines of an event by reference (a cancellation finds them without its pseudonym map).
  store.migrate('ledger-3-dr-ref', "CREATE INDEX ledger_dr ON ledger (ref) WHERE kind != 'energy'");
}

/** The ledger reference of a DR event's lines: its id as first raised, `<id>#<n>` for revision n. */
export function drRef(eventId: string, revision: number): string {
  return revision === 0 ? eventId : `${eventId}#${revision}`;
}

/**
 * Per household, the sum of its DR lines (credit, reversals) of reference `ref` and their interval
 * start, micro-minor units; households whose lines sum to zero are left out.
 */
export function drLinesNet(db: Db, ref: string): { meterId: string; micro: number; intervalStart: number }[] {
  return db
    .prepare(
      `SELECT meter_id AS meterId, sum(amount_micro) AS micro, min(interval_start) AS intervalStart FROM ledger
        WHERE kind != 'energy' AND ref = ? GROUP BY meter_id HAVING sum(amount_micro) != 0`,
    )
    .all(ref) as { meterId: string; micro: number; intervalStart: number }[];
}

/**
 * The compensating line of a household's DR lines of `ref`: `amountMicro` (minus their sum) as a
 * `dr-reversal` line referenced `<ref>:void`, at the same interval start (so it is stated with
 * them, or in the next statement when theirs was issued). Written once. Inside a commit.
 */
export function postCompensation(
  db: Db,
  meterId: string,
  ref: string,
  intervalStart: number,
  amountMicro: number,
): boolean {
  return postLine(db, meterId, 'dr-reversal', `${ref}:void`, intervalStart, amountMicro);
}

/** Writes a line unless it exists; returns true if written. Call inside the caller's transaction. */
export function postLine(
  db: Db,
  meterId: string,
  kind: LineKind,
  ref: string,
  intervalStart: number,
  amountMicro: number,
): boolean {
  return insertLine(db, meterId, kind, ref, intervalStart, amountMicro, null);
}

/** Statements prepared once per database connection (preparing costs more than running them). */
interface Prepared {
  run(...params: unknown[]): { changes: number };
}
const prepared = new WeakMap<Db, Map<string, Prepared>>();
function statement(db: Db, sql: string): Prepared {
  let cache = prepared.get(db);
  if (!cache) {
    cache = new Map();
    prepared.set(db, cache);
  }
  let stmt = cache.get(sql);
  if (!stmt) {
    stmt = db.prepare(sql);
    cache.set(sql, stmt);
  }
  return stmt;
}

function insertLine(
  db: Db,
  meterId: string,
  kind: LineKind,
  ref: string,
  intervalStart: number,
  amountMicro: number,
  minutes: number | null,
): boolean {
  if (!Number.isSafeInteger(amountMicro))
    throw new RangeError(`ledger amount ${amountMicro} is not a safe integer`);
  const r = statement(
    db,
    'INSERT INTO ledger (meter_id, kind, ref, interval_start, amount_micro, minutes) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
  ).run(meterId, kind, ref, intervalStart, amountMicro, minutes);
  return r.changes === 1;
}

/** A reading's energy line (reading-charge.ts): `minutes` is the reading's length. */
export function postEnergy(
  db: Db,
  meterId: string,
  intervalStart: number,
  minutes: number,
  amountMicro: number,
): boolean {
  return insertLine(db, meterId, 'energy', '', intervalStart, amountMicro, minutes);
}

/** A DR credit: q (Wh) x p (minor per MWh), as a negative line (`ref`: `drRef`). */
export function postCredit(
  db: Db,
  meterId: string,
  ref: string,
  windowStart: number,
  quantityWh: number,
  pricePerMWh: number,
): boolean {
  return postLine(db, meterId, 'dr-credit', ref, windowStart, -quantityWh * pricePerMWh);
}

/** Reverses (part of) a DR credit: a positive line of `amountMicro` (see demand-response/settlement.ts). */
export function postReversal(
  db: Db,
  meterId: string,
  ref: string,
  windowStart: number,
  amountMicro: number,
): boolean {
  return postLine(db, meterId, 'dr-reversal', ref, windowStart, amountMicro);
}

/** Rounds micro-minor units to minor units, half to even. */
export function roundHalfEven(micro: bigint): bigint {
  const q = micro / 1_000_000n;
  const r = micro % 1_000_000n;
  const twice = 2n * (r < 0n ? -r : r);
  if (twice < 1_000_000n) return q;
  const away = micro < 0n ? q - 1n : q + 1n;
  if (twice > 1_000_000n) return away;
  return q % 2n === 0n ? q : away;
}

/**
 * Sum of a household's open (not yet stated) lines up to `before`, in micro units, with how many
 * readings were billed and the minutes they cover from `from` on (the household's own counts).
 */
export function openTotal(
  db: Db,
  meterId: string,
  before: number,
  from = Number.MIN_SAFE_INTEGER,
): { micro: bigint; readings: number; minutes: number } {
  const row = db
    .prepare(
      `SELECT coalesce(sum(amount_micro), 0) AS micro, coalesce(sum(kind = 'energy'), 0) AS n,
         coalesce(sum(CASE WHEN kind = 'energy' AND interval_start >= ? THEN minutes ELSE 0 END), 0) AS minutes
       FROM ledger WHERE meter_id = ? AND statement_id IS NULL AND interval_start < ?`,
    )
    .safeIntegers(true)
    .get(from, meterId, before) as { micro: bigint; n: bigint; minutes: bigint };
  return { micro: row.micro, readings: Number(row.n), minutes: Number(row.minutes) };
}

/** Assigns the open lines to a statement. */
export function closeLines(db: Db, meterId: string, before: number, statementId: string): void {
  db.prepare(
    'UPDATE ledger SET statement_id = ? WHERE meter_id = ? AND statement_id IS NULL AND interval_start < ?',
  ).run(statementId, meterId, before);
}
