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
 * transaction before the handler returns, i.e. before the PUBACK. Rules 3 and 4 are the pure
 * `judgeReading` (reading-rules.ts); the rows live in the reading store (reading-store.ts).
 */
import { createHash } from 'node:crypto';
import { type Alert, decodePayload, PROTOCOL_VERSION, type Reading, readingSchema } from '@tre/protocol';
import { type HandlerResult, type InboundMessage, refusal, refusalOf } from '../broker/message-router.js';
import type { FlowBase } from '../flow-base.js';
import { type Db, StoreError } from '../store/store.js';
import { judgeReading } from './reading-rules.js';
import type { ReadingStore } from './reading-store.js';

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

export interface ReadingIngestDeps extends Pick<FlowBase, 'store' | 'registry' | 'router' | 'clock' | 'log'> {
  readings: ReadingStore;
  /** The regulator that gets a copy of each alert, if one has configured this TRE. */
  regulatorId: () => string | undefined;
}

export class ReadingIngest {
  private readonly hooks: ReadingHook[] = [];

  constructor(
    private readonly deps: ReadingIngestDeps,
    private readonly skewMs = 120_000,
  ) {}

  start(): void {
    this.deps.router.on('reading', (msg) => this.handle(msg));
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
      outcome = await this.deps.store.commit((db) =>
        this.write(db, msg.from.id, reading, start, lengthMs, maxWh),
      );
    } catch (err) {
      if (err instanceof StoreError)
        return refusal(
          requestId,
          'STORAGE_UNAVAILABLE',
          'the TRE cannot store data right now; keep it and retry',
        );
      throw err;
    }
    switch (outcome.kind) {
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

  private write(
    db: Db,
    meterId: string,
    r: Reading,
    start: number,
    lengthMs: number,
    maxWh: number,
  ): Outcome {
    const { readings, clock } = this.deps;
    const hash = contentHash(r);
    const existing = readings.get(meterId, start);
    if (existing) {
      if (existing.content_hash !== hash) return { kind: 'conflict' };
      return existing.status === 'ok' ? { kind: 'duplicate' } : { kind: 'duplicate-excluded' };
    }
    const judged = judgeReading(
      r.registerWh,
      r.energyWh,
      readings.get(meterId, start - lengthMs),
      readings.get(meterId, start + lengthMs),
      maxWh,
    );
    const status = judged.excluded ? 'excluded' : 'ok';
    readings.insert({
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
      contentHash: hash,
      receivedAt: clock.now(),
    });
    if (judged.excluded) {
      readings.insertAlert(meterId, judged.excluded.alert, judged.excluded.why, clock.now());
      return { kind: 'excluded', ...judged.excluded };
    }
    const committed: CommittedReading = {
      meterId,
      intervalStart: start,
      intervalMinutes: r.intervalMinutes,
      effectiveWh: judged.effectiveWh,
      status,
    };
    for (const hook of this.hooks) hook(db, committed);
    return { kind: 'stored', reading: committed };
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
