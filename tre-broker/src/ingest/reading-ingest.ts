/**
 * Durable ingest of interval readings (paper III-A, and the input of billing).
 *
 * Rules, in order:
 *  1. the payload must parse (`readingSchema`), the meter must be registered, the interval must be
 *     aligned to its length in UTC and must have ended (by the TRE's clock, with `skewMs` grace);
 *  2. idempotency on (meter, intervalStart): an identical resend is acknowledged (PUBACK, as an
 *     acceptance) and ignored; a different reading for the same interval is refused and alerted;
 *  3. effective energy = register difference with the previous interval's reading when that reading
 *     exists and is in bounds, else the reported interval energy. So a resend or a late reading can
 *     never double-count;
 *  4. bounds: effective energy outside [0, capacity x interval + 1 Wh of register resolution], or a register below the previous
 *     interval's (or above the next one's) is stored as `excluded`, alerted, and refused with
 *     OUT_OF_BOUNDS; excluded readings count in aggregates only as the number excluded, never billed.
 * The row (and whatever the `onCommitted` hooks write, e.g. ledger lines) is committed before the
 * handler returns, i.e. before the PUBACK. Rules 3 and 4 are the pure `judgeReading`
 * (reading-rules.ts); the rows live in the reading store (reading-store.ts).
 *
 * Acceptance is the PUBACK (the router sends no receipt for an accepted reading, a duplicate
 * included); a refusal is a receipt, written before the PUBACK.
 *
 * Group commit: the readings handled in one tick are written by one `Store.commit` write: one
 * query per reading for its interval and its neighbours (`nearby`, which also sees the batch's
 * readings not inserted yet), then one multi-row INSERT for the batch, then each stored reading's
 * hooks in a savepoint of their own (a hook that throws undoes its writes and that reading only).
 */
import { hash } from 'node:crypto';
import { type Alert, decodePayload, PROTOCOL_VERSION, type Reading, readingSchema } from '@tre/protocol';
import { type HandlerResult, type InboundMessage, refusal, refusalOf } from '../broker/message-router.js';
import type { FlowBase } from '../flow-base.js';
import { type Db, StoreError } from '../store/store.js';
import { judgeReading } from './reading-rules.js';
import type { NewReading, ReadingStore, StoredReading } from './reading-store.js';

export interface CommittedReading {
  meterId: string;
  intervalStart: number;
  intervalMinutes: number;
  effectiveWh: number;
  status: 'ok' | 'excluded';
}

/**
 * Runs inside the reading's transaction, in a savepoint of its own, after its batch's rows are
 * inserted; throwing undoes the hooks' writes and aborts that reading (its row is deleted).
 */
export type ReadingHook = (db: Db, reading: CommittedReading) => void;

type Outcome =
  | { kind: 'stored'; reading: CommittedReading }
  | { kind: 'duplicate' }
  | { kind: 'duplicate-excluded' }
  | { kind: 'conflict' }
  | { kind: 'excluded'; why: string; alert: Alert['kind'] }
  | { kind: 'failed'; err: unknown };

/** A reading waiting for its batch's write. */
interface Job {
  meterId: string;
  reading: Reading;
  start: number;
  lengthMs: number;
  maxWh: number;
}

/** The readings of one `Store.commit` write, and its outcomes (one per job, in order). */
interface Batch {
  jobs: Job[];
  done: Promise<Outcome[]>;
}

/** Readings per batch at most (a full batch starts the next one). */
const MAX_BATCH = 1_000;

/** SQLite errors that mean the disk, not the reading: refused as STORAGE_UNAVAILABLE (no PUBACK). */
const STORAGE_ERROR = /^SQLITE_(FULL|IOERR|CANTOPEN|READONLY)/;

export interface ReadingIngestDeps extends Pick<FlowBase, 'store' | 'registry' | 'router' | 'clock' | 'log'> {
  readings: ReadingStore;
  /** The regulator that gets a copy of each alert, if one has configured this TRE. */
  regulatorId: () => string | undefined;
}

export class ReadingIngest {
  private readonly hooks: ReadingHook[] = [];
  /** The batch still open for readings of this tick, if any. */
  private batch: Batch | undefined;
  /** Runs a function in a savepoint (made once: making a transaction function costs more than running it). */
  private savepoint: ((fn: () => void) => void) | undefined;

  constructor(
    private readonly deps: ReadingIngestDeps,
    private readonly skewMs = 120_000,
  ) {}

  start(): void {
    this.deps.router.on('reading', (msg) => this.handle(msg), { acceptedByPuback: true });
  }

  /** Registers a hook that runs in the same transaction as each stored reading. */
  onCommitted(hook: ReadingHook): void {
    this.hooks.push(hook);
  }

  async handle(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, readingSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const reading = decoded.value;
    const requestId = reading.requestId;
    const household = this.deps.registry.get(msg.from.id);
    if (!household) return refusal(requestId, 'UNKNOWN_METER', 'this meter is not registered with the TRE');
    const start = Date.parse(reading.intervalStart);
    const lengthMs = reading.intervalMinutes * 60_000;
    if (start % lengthMs !== 0)
      return refusal(
        requestId,
        'MALFORMED',
        `intervalStart must be aligned to ${reading.intervalMinutes} minutes`,
      );
    if (start + lengthMs > this.deps.clock.now() + this.skewMs)
      return refusal(requestId, 'MALFORMED', 'the interval has not ended yet');
    // +1 Wh: two register readings, each rounded down to whole Wh, can differ by up to 1 Wh more than the energy.
    const maxWh = Math.floor((household.capacityW * reading.intervalMinutes) / 60) + 1;
    let outcome: Outcome;
    try {
      outcome = await this.enqueue({ meterId: msg.from.id, reading, start, lengthMs, maxWh });
    } catch (err) {
      outcome = { kind: 'failed', err };
    }
    switch (outcome.kind) {
      case 'failed':
        if (isStorageError(outcome.err))
          return refusal(
            requestId,
            'STORAGE_UNAVAILABLE',
            'the TRE cannot store data right now; keep it and retry',
          );
        throw outcome.err;
      case 'stored':
        return { status: 'accepted', requestId };
      case 'duplicate':
        return { status: 'accepted', requestId, duplicate: true };
      case 'duplicate-excluded':
        return refusal(requestId, 'OUT_OF_BOUNDS', 'this reading was already excluded');
      case 'conflict':
        await this.alert(
          msg.from.id,
          'conflicting-duplicate',
          'a different reading for this interval was already stored; the first one stands',
        );
        return refusal(
          requestId,
          'CONFLICTING_DUPLICATE',
          'a different reading for this interval is already stored',
        );
      case 'excluded':
        await this.alert(msg.from.id, outcome.alert, outcome.why);
        return refusal(requestId, 'OUT_OF_BOUNDS', outcome.why);
      default: {
        const never: never = outcome;
        return never;
      }
    }
  }

  /** Adds a reading to this tick's batch; resolves with its outcome once the batch is committed. */
  private enqueue(job: Job): Promise<Outcome> {
    const open = this.batch;
    if (open && open.jobs.length < MAX_BATCH) {
      const index = open.jobs.push(job) - 1;
      return open.done.then((o) => o[index]!);
    }
    const batch: Batch = { jobs: [job], done: undefined as unknown as Promise<Outcome[]> };
    // Open before commit(): a store that flushes at once (a full queue) runs the batch inside commit().
    this.batch = batch;
    batch.done = this.deps.store.commit((db) => {
      if (this.batch === batch) this.batch = undefined;
      return this.writeBatch(db, batch.jobs);
    });
    batch.done.catch(() => {
      if (this.batch === batch) this.batch = undefined; // a closed store refuses at once
    });
    return batch.done.then((o) => o[0]!);
  }

  private writeBatch(db: Db, jobs: readonly Job[]): Outcome[] {
    const { readings, clock } = this.deps;
    const now = clock.now();
    const rows: NewReading[] = [];
    // Rows of this batch not inserted yet, by meter and interval start.
    const inBatch = new Map<string, NewReading>();
    const outcomes: Outcome[] = [];
    const stored: { index: number; row: NewReading; reading: CommittedReading }[] = [];
    // Jobs answered as duplicates of (or conflicts with) a row of this batch: they share its fate.
    const answeredBy = new Map<NewReading, number[]>();
    for (const [index, { meterId, reading: r, start, lengthMs, maxWh }] of jobs.entries()) {
      const digest = contentHash(r);
      const near = readings.nearby(meterId, start, lengthMs);
      const at = (t: number, fromStore: StoredReading | undefined): StoredReading | undefined => {
        const row = inBatch.get(`${meterId}\u0000${t}`);
        return row
          ? { register_wh: row.registerWh, status: row.status, content_hash: row.contentHash }
          : fromStore;
      };
      const existing = at(start, near.same);
      if (existing) {
        if (existing.content_hash !== digest) outcomes.push({ kind: 'conflict' });
        else outcomes.push(existing.status === 'ok' ? { kind: 'duplicate' } : { kind: 'duplicate-excluded' });
        const first = inBatch.get(`${meterId}\u0000${start}`);
        if (first) answeredBy.set(first, [...(answeredBy.get(first) ?? []), index]);
        continue;
      }
      const judged = judgeReading(
        r.registerWh,
        r.energyWh,
        at(start - lengthMs, near.previous),
        at(start + lengthMs, near.next),
        maxWh,
      );
      const status = judged.excluded ? 'excluded' : 'ok';
      const row: NewReading = {
        meterId,
        intervalStart: start,
        intervalMinutes: r.intervalMinutes,
        energyWh: r.energyWh,
        registerWh: r.registerWh,
        exportWh: r.exportWh ?? null,
        exportRegisterWh: r.exportRegisterWh ?? null,
        gap: !!r.gap,
        effectiveWh: judged.effectiveWh,
        status,
        contentHash: digest,
        receivedAt: now,
      };
      rows.push(row);
      inBatch.set(`${meterId}\u0000${start}`, row);
      if (judged.excluded) {
        readings.insertAlert(meterId, judged.excluded.alert, judged.excluded.why, now);
        outcomes.push({ kind: 'excluded', ...judged.excluded });
        continue;
      }
      const committed: CommittedReading = {
        meterId,
        intervalStart: start,
        intervalMinutes: r.intervalMinutes,
        effectiveWh: judged.effectiveWh,
        status,
      };
      outcomes.push({ kind: 'stored', reading: committed });
      stored.push({ index, row, reading: committed });
    }
    readings.insertMany(rows);
    if (this.hooks.length > 0) {
      this.savepoint ??= db.transaction((fn: () => void) => fn());
      for (const s of stored) {
        try {
          this.savepoint(() => {
            for (const hook of this.hooks) hook(db, s.reading);
          });
        } catch (err) {
          // The hooks' writes are undone (savepoint); the reading goes too, so it is stored with them
          // or not at all, and a resend answered by it in this batch is not acknowledged either.
          readings.deleteOne(s.row.meterId, s.row.intervalStart);
          outcomes[s.index] = { kind: 'failed', err };
          for (const i of answeredBy.get(s.row) ?? []) outcomes[i] = { kind: 'failed', err };
        }
      }
    }
    return outcomes;
  }

  private async alert(meterId: string, kind: Alert['kind'], message: string): Promise<void> {
    const alert: Alert = {
      v: PROTOCOL_VERSION,
      kind,
      message,
      at: new Date(this.deps.clock.now()).toISOString(),
    };
    this.deps.log.warn({ kind }, 'reading alert');
    await this.deps.router.reply({ role: 'meter', id: meterId }, 'alert', alert);
    const regulator = this.deps.regulatorId();
    if (regulator)
      await this.deps.router.reply({ role: 'regulator', id: regulator }, 'alert', { ...alert, meterId });
  }
}

function isStorageError(err: unknown): boolean {
  return err instanceof StoreError || STORAGE_ERROR.test(String((err as { code?: unknown } | null)?.code));
}

function contentHash(r: Reading): string {
  const canonical = [
    r.intervalStart,
    r.intervalMinutes,
    r.energyWh,
    r.registerWh,
    r.exportWh ?? '',
    r.exportRegisterWh ?? '',
    r.gap ? 1 : 0,
  ];
  return hash('sha256', JSON.stringify(canonical), 'base64url'); // one-shot: same digest as createHash, cheaper
}
