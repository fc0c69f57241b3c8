/**
 * Durable ingest of interval readings (paper III-A, and the input of billing).
 *
 * Rules, in order:
 *  1. the payload must parse (`readingSchema`), the meter must be registered, the interval must be
 *     aligned to its length in UTC and must have ended (by the TRE's clock, with `skewMs` grace);
 *  2. idempotency on (meter, intervalStart): an identical resend is acknowledged as a duplicate and
 *     ignored; a different reading for the same interval is refused and alerted;
 *  3. effective energy = register difference with the previous interval's reading when that reading
 *     exists and is in bounds, else the reported interval energy. So a resend or a late reading can
 *     never double-count;
 *  4. bounds: effective energy outside [0, capacity x interval + 1 Wh of register resolution], or a register below the previous
 *     interval's (or above the next one's) is stored as `excluded`, alerted, and refused with
 *     OUT_OF_BOUNDS; excluded readings count in aggregates only as the number excluded, never billed.
 * The row (and whatever the `onCommitted` hooks write, e.g. ledger lines) is committed in one
 * transaction before the handler returns, i.e. before the PUBACK.
 */
import { createHash } from 'node:crypto';
import {
  type Alert,
  type Clock,
  decodePayload,
  PROTOCOL_VERSION,
  type Reading,
  readingSchema,
} from '@tre/protocol';
import {
  type HandlerResult,
  type InboundMessage,
  type MessageRouter,
  refusalOf,
} from '../broker/message-router.js';
import type { Logger } from '../log.js';
import type { HouseholdRegistry } from '../registry/household-registry.js';
import { type Db, type Store, StoreError } from '../store/store.js';

export interface CommittedReading {
  meterId: string;
  intervalStart: number;
  intervalMinutes: number;
  effectiveWh: number;
  status: 'ok' | 'excluded';
}

/** Runs inside the reading's transaction; throwing aborts that reading. */
export type ReadingHook = (db: Db, reading: CommittedReading) => void;

type Outcome =
  | { kind: 'stored'; reading: CommittedReading }
  | { kind: 'duplicate' }
  | { kind: 'duplicate-excluded' }
  | { kind: 'conflict' }
  | { kind: 'excluded'; why: string; alert: Alert['kind'] };

interface ReadingRow {
  register_wh: number;
  status: string;
  content_hash: string;
}

export class ReadingIngest {
  private readonly hooks: ReadingHook[] = [];

  constructor(
    private readonly store: Store,
    private readonly registry: HouseholdRegistry,
    private readonly router: MessageRouter,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly skewMs = 120_000,
  ) {
    store.migrate(
      'readings-1',
      `CREATE TABLE readings (
         meter_id TEXT NOT NULL,
         interval_start INTEGER NOT NULL,
         interval_minutes INTEGER NOT NULL,
         energy_wh INTEGER NOT NULL,
         register_wh INTEGER NOT NULL,
         export_wh INTEGER,
         export_register_wh INTEGER,
         gap INTEGER NOT NULL DEFAULT 0,
         effective_wh INTEGER NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('ok', 'excluded')),
         content_hash TEXT NOT NULL,
         received_at INTEGER NOT NULL,
         PRIMARY KEY (meter_id, interval_start)
       ) WITHOUT ROWID;
       CREATE INDEX readings_interval ON readings (interval_start);
       CREATE TABLE alerts (
         id INTEGER PRIMARY KEY,
         meter_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         detail TEXT NOT NULL,
         at INTEGER NOT NULL
       );`,
    );
    router.on('reading', (msg) => this.handle(msg));
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
    const household = this.registry.get(msg.from.id);
    if (!household)
      return {
        status: 'refused',
        requestId,
        reason: 'UNKNOWN_METER',
        message: 'this meter is not registered with the TRE',
      };
    const start = Date.parse(reading.intervalStart);
    const lengthMs = reading.intervalMinutes * 60_000;
    if (start % lengthMs !== 0) {
      return {
        status: 'refused',
        requestId,
        reason: 'MALFORMED',
        message: `intervalStart must be aligned to ${reading.intervalMinutes} minutes`,
      };
    }
    if (start + lengthMs > this.clock.now() + this.skewMs) {
      return { status: 'refused', requestId, reason: 'MALFORMED', message: 'the interval has not ended yet' };
    }
    // +1 Wh: two register readings, each rounded down to whole Wh, can differ by up to 1 Wh more than the energy.
    const maxWh = Math.floor((household.capacityW * reading.intervalMinutes) / 60) + 1;
    let outcome: Outcome;
    try {
      outcome = await this.store.commit((db) => this.write(db, msg.from.id, reading, start, lengthMs, maxWh));
    } catch (err) {
      if (err instanceof StoreError)
        return {
          status: 'refused',
          requestId,
          reason: 'STORAGE_UNAVAILABLE',
          message: 'the TRE cannot store data right now; keep it and retry',
        };
      throw err;
    }
    switch (outcome.kind) {
      case 'stored':
        return { status: 'accepted', requestId };
      case 'duplicate':
        return { status: 'accepted', requestId, duplicate: true };
      case 'duplicate-excluded':
        return {
          status: 'refused',
          requestId,
          reason: 'OUT_OF_BOUNDS',
          message: 'this reading was already excluded',
        };
      case 'conflict':
        await this.alert(
          msg.from.id,
          'conflicting-duplicate',
          'a different reading for this interval was already stored; the first one stands',
        );
        return {
          status: 'refused',
          requestId,
          reason: 'CONFLICTING_DUPLICATE',
          message: 'a different reading for this interval is already stored',
        };
      case 'excluded':
        await this.alert(msg.from.id, outcome.alert, outcome.why);
        return { status: 'refused', requestId, reason: 'OUT_OF_BOUNDS', message: outcome.why };
      default: {
        const never: never = outcome;
        return never;
      }
    }
  }

  private write(
    db: Db,
    meterId: string,
    r: Reading,
    start: number,
    lengthMs: number,
    maxWh: number,
  ): Outcome {
    const hash = contentHash(r);
    const get = this.store.statement(
      'SELECT register_wh, status, content_hash FROM readings WHERE meter_id = ? AND interval_start = ?',
    );
    const existing = get.get(meterId, start) as ReadingRow | undefined;
    if (existing) {
      if (existing.content_hash !== hash) return { kind: 'conflict' };
      return existing.status === 'ok' ? { kind: 'duplicate' } : { kind: 'duplicate-excluded' };
    }
    const prev = get.get(meterId, start - lengthMs) as ReadingRow | undefined;
    const next = get.get(meterId, start + lengthMs) as ReadingRow | undefined;
    const effectiveWh = prev && prev.status === 'ok' ? r.registerWh - prev.register_wh : r.energyWh;
    let why: string | undefined;
    let alert: Alert['kind'] = 'reading-out-of-bounds';
    if (
      (prev && r.registerWh < prev.register_wh) ||
      (next && next.status === 'ok' && r.registerWh > next.register_wh)
    ) {
      why = 'the register went backwards';
      alert = 'register-backwards';
    } else if (effectiveWh < 0) why = 'negative interval energy';
    else if (effectiveWh > maxWh) why = `interval energy above installed capacity x interval (${maxWh} Wh)`;
    const status = why ? 'excluded' : 'ok';
    this.store
      .statement(
        `INSERT INTO readings (meter_id, interval_start, interval_minutes, energy_wh, register_wh, export_wh,
         export_register_wh, gap, effective_wh, status, content_hash, received_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        meterId,
        start,
        r.intervalMinutes,
        r.energyWh,
        r.registerWh,
        r.exportWh ?? null,
        r.exportRegisterWh ?? null,
        r.gap ? 1 : 0,
        effectiveWh,
        status,
        hash,
        this.clock.now(),
      );
    if (why) {
      db.prepare('INSERT INTO alerts (meter_id, kind, detail, at) VALUES (?, ?, ?, ?)').run(
        meterId,
        alert,
        why,
        this.clock.now(),
      );
      return { kind: 'excluded', why, alert };
    }
    const committed: CommittedReading = {
      meterId,
      intervalStart: start,
      intervalMinutes: r.intervalMinutes,
      effectiveWh,
      status,
    };
    for (const hook of this.hooks) hook(db, committed);
    return { kind: 'stored', reading: committed };
  }

  private async alert(meterId: string, kind: Alert['kind'], message: string): Promise<void> {
    const alert: Alert = { v: PROTOCOL_VERSION, kind, message, at: new Date(this.clock.now()).toISOString() };
    this.log.warn({ kind }, 'reading alert');
    await this.router.reply({ role: 'meter', id: meterId }, 'alert', alert);
  }
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
  return createHash('sha256').update(JSON.stringify(canonical)).digest('base64url');
}
