/**
 * The billing flow (paper III-B) in the TRE. The supplier learns one signed total per household
 * per billing period and nothing finer:
 *  - tariffs: verified against the connected supplier's certificate key, stored, re-signed by the
 *    TRE and broadcast (retained) for the households' agents to verify;
 *  - ledger: every stored in-bounds reading is billed in its own transaction (Wh x price); readings
 *    without a tariff yet are billed when the tariff arrives;
 *  - periods: the supplier's period, never shorter than the regulator's signed minimum (default one
 *    month); after each period end (plus a grace hour for the period's last readings) one TRE-signed
 *    statement per household goes to the supplier and to the household, durably stored first and
 *    re-sent until the supplier acknowledges it;
 *  - households get their running bill, TRE-signed, on their inbox (at most every `billEveryMs`).
 */
import { randomBytes } from 'node:crypto';
import {
  type Bill,
  billingPeriodRequestSchema,
  decodePayload,
  type PeriodLength,
  PROTOCOL_VERSION,
  regulatorConfigSchema,
  type Statement,
  signContent,
  statementAckSchema,
  type TimerHandle,
  tariffSchema,
  topics,
} from '@tre/protocol';
import { type HandlerResult, type InboundMessage, refusalOf } from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import type { ReadingIngest } from '../ingest/reading-ingest.js';
import type { Db } from '../store/store.js';
import type { TreContext } from '../tre.js';
import { closeLines, migrateLedger, openTotal, postLine, roundHalfEven } from './ledger.js';
import { checkTariff, latestTariffs, priceAt, storeTariff, TARIFF_SCHEMA } from './tariff-book.js';

export interface BillingOptions {
  /** The minimum billing period until the regulator signs another (default one month). */
  minPeriod?: PeriodLength;
  /** Unacknowledged statements are re-sent this often (default 10 minutes). */
  resendMs?: number;
  /** Households get their running bill at most this often (default 1 hour). */
  billEveryMs?: number;
  /** Statements wait this long after the period end for the period's last readings (default 1 hour). */
  statementGraceMs?: number;
}

interface PeriodRow {
  supplier_id: string;
  starts_at: number;
  unit: 'day' | 'month';
  count: number;
}

/** Adds `n` periods of `length` to `t` (calendar months in UTC). */
export function addPeriods(t: number, length: PeriodLength, n: number): number {
  if (length.unit === 'day') return t + n * length.count * 86_400_000;
  const d = new Date(t);
  return Date.UTC(
    d.getUTCFullYear(),
    d.getUTCMonth() + n * length.count,
    d.getUTCDate(),
    d.getUTCHours(),
    d.getUTCMinutes(),
  );
}

/**
 * Is `period` at least `min`? Same unit: compare counts. Across units, a month counts as 28 days
 * for the supplier's period and 31 days for the regulator's minimum (never shorter than allowed).
 */
export function atLeast(period: PeriodLength, min: PeriodLength): boolean {
  if (period.unit === min.unit) return period.count >= min.count;
  const days = (p: PeriodLength, monthDays: number) => (p.unit === 'day' ? p.count : p.count * monthDays);
  return days(period, 28) >= days(min, 31);
}

export class BillingService {
  private readonly timers = new Map<string, TimerHandle>();
  /** The pending timer of each repeated job. */
  private readonly repeating = new Map<string, TimerHandle>();
  private readonly dirty = new Set<string>();
  readonly stats = { statements: 0, resent: 0 };

  constructor(
    private readonly ctx: TreContext,
    ingest: ReadingIngest,
    private readonly options: BillingOptions = {},
  ) {
    ctx.store.migrate(
      'billing-1',
      `${TARIFF_SCHEMA}
       CREATE TABLE billing_periods (supplier_id TEXT PRIMARY KEY, starts_at INTEGER NOT NULL, unit TEXT NOT NULL, count INTEGER NOT NULL);
       CREATE TABLE statements (statement_id TEXT PRIMARY KEY, supplier_id TEXT NOT NULL, meter_id TEXT NOT NULL,
         period_start INTEGER NOT NULL, body TEXT NOT NULL, jws TEXT, acked INTEGER NOT NULL DEFAULT 0,
         UNIQUE (meter_id, period_start));
       CREATE INDEX statements_unacked ON statements (supplier_id) WHERE acked = 0;
       CREATE TABLE regulator_config (id INTEGER PRIMARY KEY CHECK (id = 1), min_unit TEXT NOT NULL, min_count INTEGER NOT NULL, issued_at TEXT NOT NULL);`,
    );
    migrateLedger(ctx.store);
    ingest.onCommitted((db, r) => {
      if (this.billReading(db, r.meterId, r.intervalStart, r.effectiveWh)) this.dirty.add(r.meterId);
    });
    ctx.router.on('tariff', (m) => this.handleTariff(m));
    ctx.router.on('billing-period', (m) => this.handlePeriod(m));
    ctx.router.on('statement-ack', (m) => this.handleAck(m));
    ctx.router.on('config', (m) => this.handleRegulatorConfig(m));
    for (const p of ctx.store.db.prepare('SELECT * FROM billing_periods').all() as PeriodRow[])
      this.schedule(p);
    this.every(this.options.resendMs ?? 10 * 60_000, 'statement re-send', () => this.resendUnacked());
    this.every(this.options.billEveryMs ?? 60 * 60_000, 'running bills', () => this.sendBills());
    void this.background(this.rebroadcastTariffs(), 'tariff re-broadcast');
    void this.background(this.deliverPending(), 'statement delivery');
  }

  private get grace(): number {
    return this.options.statementGraceMs ?? 3_600_000;
  }

  minPeriod(): PeriodLength {
    const row = this.ctx.store.db
      .prepare('SELECT min_unit, min_count FROM regulator_config WHERE id = 1')
      .get() as { min_unit: 'day' | 'month'; min_count: number } | undefined;
    return row
      ? { unit: row.min_unit, count: row.min_count }
      : (this.options.minPeriod ?? { unit: 'month', count: 1 });
  }

  /** Writes the energy line of a reading if its supplier's price for that interval is known. */
  private billReading(db: Db, meterId: string, intervalStart: number, wh: number): boolean {
    const household = this.ctx.registry.get(meterId);
    if (!household) return false;
    const price = priceAt(db, household.supplierId, intervalStart);
    if (!price) return false; // billed when the tariff arrives
    return postLine(db, meterId, 'energy', '', intervalStart, wh * price.price);
  }

  private openPeriodStart(supplierId: string): number | undefined {
    const p = this.ctx.store.db
      .prepare('SELECT * FROM billing_periods WHERE supplier_id = ?')
      .get(supplierId) as PeriodRow | undefined;
    return p ? this.currentPeriod(p).start : undefined;
  }

  private currentPeriod(p: PeriodRow): { start: number; end: number } {
    const length = { unit: p.unit, count: p.count };
    let start = p.starts_at;
    let end = addPeriods(start, length, 1);
    while (end + this.grace <= this.ctx.clock.now()) {
      start = end;
      end = addPeriods(start, length, 1);
    }
    return { start, end };
  }

  private async handleTariff(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(msg, 'tariff', tariffSchema, (t) => t.supplierId);
    if (!signed.ok) return signed.refusal;
    const { requestId, content: tariff } = signed;
    const problem = checkTariff(
      this.ctx.store.db,
      tariff,
      this.openPeriodStart(tariff.supplierId),
      this.ctx.clock.now(),
    );
    if (problem) return { status: 'refused', requestId, ...problem };
    const treJws = await signContent('tariff', tariff, this.ctx.signingKey);
    const billed = await this.ctx.store.commit((db) => {
      storeTariff(db, tariff, treJws);
      const unbilled = db
        .prepare(
          `SELECT r.meter_id, r.interval_start, r.effective_wh FROM readings r JOIN households h ON h.meter_id = r.meter_id
           WHERE h.supplier_id = ? AND r.status = 'ok' AND r.interval_start >= ? AND r.interval_start < ?`,
        )
        .all(tariff.supplierId, Date.parse(tariff.validFrom), Date.parse(tariff.validTo)) as {
        meter_id: string;
        interval_start: number;
        effective_wh: number;
      }[];
      let n = 0;
      for (const r of unbilled) if (this.billReading(db, r.meter_id, r.interval_start, r.effective_wh)) n++;
      return n;
    });
    await this.ctx.outbound.publish(
      topics.broadcastTariff(tariff.supplierId),
      JSON.stringify({ v: PROTOCOL_VERSION, jws: treJws }),
      { retain: true },
    );
    return {
      status: 'accepted',
      requestId,
      message: billed ? `tariff stored; ${billed} waiting readings billed` : 'tariff stored',
    };
  }

  private async rebroadcastTariffs(): Promise<void> {
    for (const t of latestTariffs(this.ctx.store.db)) {
      await this.ctx.outbound.publish(
        topics.broadcastTariff(t.supplierId),
        JSON.stringify({ v: PROTOCOL_VERSION, jws: t.treJws }),
        { retain: true },
      );
    }
  }

  private async handlePeriod(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, billingPeriodRequestSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, startsAt, length } = decoded.value;
    const min = this.minPeriod();
    if (!atLeast(length, min)) {
      return {
        status: 'refused',
        requestId,
        reason: 'PERIOD_TOO_SHORT',
        message: `the regulator's minimum billing period is ${min.count} ${min.unit}(s)`,
      };
    }
    const row: PeriodRow = {
      supplier_id: msg.from.id,
      starts_at: Date.parse(startsAt),
      unit: length.unit,
      count: length.count,
    };
    await this.ctx.store.commit((db) =>
      db
        .prepare(
          'INSERT INTO billing_periods (supplier_id, starts_at, unit, count) VALUES (?, ?, ?, ?) ON CONFLICT (supplier_id) DO UPDATE SET starts_at = excluded.starts_at, unit = excluded.unit, count = excluded.count',
        )
        .run(row.supplier_id, row.starts_at, row.unit, row.count),
    );
    this.schedule(row);
    return {
      status: 'accepted',
      requestId,
      message: `billing period ${length.count} ${length.unit}(s) from ${startsAt}`,
    };
  }

  private async handleRegulatorConfig(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(msg, 'regulatorConfig', regulatorConfigSchema);
    if (!signed.ok) return signed.refusal;
    const { unit, count } = signed.content.minBillingPeriod;
    await this.ctx.store.commit((db) =>
      db
        .prepare(
          'INSERT INTO regulator_config (id, min_unit, min_count, issued_at) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET min_unit = excluded.min_unit, min_count = excluded.min_count, issued_at = excluded.issued_at',
        )
        .run(unit, count, signed.content.issuedAt),
    );
    return { status: 'accepted', requestId: signed.requestId };
  }

  private async handleAck(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, statementAckSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const acked = await this.ctx.store.commit((db) => {
      const stmt = db.prepare('UPDATE statements SET acked = 1 WHERE statement_id = ? AND supplier_id = ?');
      return decoded.value.statementIds.reduce((n, id) => n + stmt.run(id, msg.from.id).changes, 0);
    });
    return {
      status: 'accepted',
      requestId: decoded.value.requestId,
      message: `${acked} statements acknowledged`,
    };
  }

  private schedule(p: PeriodRow): void {
    const existing = this.timers.get(p.supplier_id);
    if (existing) this.ctx.clock.clearTimeout(existing);
    const { start, end } = this.currentPeriod(p);
    // Periods that ended while the TRE was down (after the last one stated) are stated now.
    const last = this.ctx.store.db
      .prepare('SELECT max(period_start) AS s FROM statements WHERE supplier_id = ?')
      .get(p.supplier_id) as { s: number | null };
    if (last.s !== null) {
      const length = { unit: p.unit, count: p.count };
      for (
        let s0 = addPeriods(last.s, length, 1);
        addPeriods(s0, length, 1) <= start;
        s0 = addPeriods(s0, length, 1)
      ) {
        void this.background(
          this.closePeriod(p.supplier_id, s0, addPeriods(s0, length, 1)),
          'late statements',
        );
      }
    }
    this.timers.set(
      p.supplier_id,
      this.ctx.clock.setTimeout(
        () => {
          this.closePeriod(p.supplier_id, start, end).then(
            () => this.schedule(p),
            (err: Error) => {
              this.ctx.log.error(
                { err: err.message, supplier: p.supplier_id },
                'statements failed; retrying',
              );
              this.schedule(p);
            },
          );
        },
        Math.max(0, end + this.grace - this.ctx.clock.now()),
      ),
    );
  }

  /**
   * Issues one statement per household of the supplier for the period ending at `end`. The
   * statement rows and the closing of their ledger lines commit together; signing and delivery
   * follow, and a crash in between is finished by `deliverPending` at the next start.
   */
  async closePeriod(supplierId: string, start: number, end: number): Promise<number> {
    const households = this.ctx.registry.metersOfSupplier(supplierId);
    const expected = Math.round((end - start) / (15 * 60_000));
    await this.ctx.store.commit((db) => {
      const insert = db.prepare(
        'INSERT INTO statements (statement_id, supplier_id, meter_id, period_start, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
      );
      const currency =
        (priceAt(db, supplierId, start) ?? priceAt(db, supplierId, end - 1))?.currency ?? 'GBP';
      for (const h of households) {
        const { micro, energyIntervals } = openTotal(db, h.meterId, end);
        const statement: Statement = {
          v: PROTOCOL_VERSION,
          statementId: randomBytes(12).toString('hex'),
          supplierId,
          account: h.account,
          periodStart: new Date(start).toISOString(),
          periodEnd: new Date(end).toISOString(),
          currency,
          totalMinor: Number(roundHalfEven(micro)),
          intervalsBilled: energyIntervals,
          intervalsMissing: Math.max(0, expected - energyIntervals),
        };
        const r = insert.run(statement.statementId, supplierId, h.meterId, start, JSON.stringify(statement));
        if (r.changes === 1) closeLines(db, h.meterId, end, statement.statementId); // not issued before a restart
      }
    });
    return this.deliverPending();
  }

  private delivering: Promise<number> = Promise.resolve(0);

  /** Signs stored statements that have no signature yet and delivers them (one run at a time). */
  deliverPending(): Promise<number> {
    this.delivering = this.delivering.catch(() => 0).then(() => this.signAndDeliver());
    return this.delivering;
  }

  private async signAndDeliver(): Promise<number> {
    const rows = this.ctx.store.db
      .prepare('SELECT statement_id, supplier_id, meter_id, body FROM statements WHERE jws IS NULL')
      .all() as {
      statement_id: string;
      supplier_id: string;
      meter_id: string;
      body: string;
    }[];
    const signed = await Promise.all(
      rows.map(async (r) => ({
        ...r,
        jws: await signContent('statement', JSON.parse(r.body), this.ctx.signingKey),
      })),
    );
    await this.ctx.store.commit((db) => {
      const update = db.prepare('UPDATE statements SET jws = ? WHERE statement_id = ?');
      for (const s of signed) update.run(s.jws, s.statement_id);
    });
    for (const s of signed) {
      const body = { v: PROTOCOL_VERSION, jws: s.jws };
      await this.ctx.outbound.publish(topics.statement(s.supplier_id), JSON.stringify(body));
      await this.ctx.router.reply({ role: 'meter', id: s.meter_id }, 'statement', body);
    }
    this.stats.statements += signed.length;
    return signed.length;
  }

  /** Runs `work` every `ms` (clock time) until stop(); a failure is logged and the next round still comes. */
  private every(ms: number, what: string, work: () => Promise<unknown>): void {
    if (this.stopped) return;
    this.repeating.set(
      what,
      this.ctx.clock.setTimeout(() => {
        void this.background(work(), what).finally(() => this.every(ms, what, work));
      }, ms),
    );
  }

  async resendUnacked(): Promise<number> {
    const rows = this.ctx.store.db
      .prepare('SELECT supplier_id, jws FROM statements WHERE acked = 0 AND jws IS NOT NULL')
      .all() as { supplier_id: string; jws: string }[];
    for (const r of rows)
      await this.ctx.outbound.publish(
        topics.statement(r.supplier_id),
        JSON.stringify({ v: PROTOCOL_VERSION, jws: r.jws }),
      );
    this.stats.resent += rows.length;
    return rows.length;
  }

  /** Sends each household whose bill changed its TRE-signed running bill. */
  async sendBills(): Promise<void> {
    const meters = [...this.dirty];
    this.dirty.clear();
    for (const meterId of meters) {
      const h = this.ctx.registry.get(meterId);
      if (!h) continue;
      const start = this.openPeriodStart(h.supplierId) ?? 0;
      const { micro, energyIntervals } = openTotal(this.ctx.store.db, meterId, Number.MAX_SAFE_INTEGER);
      const bill: Bill = {
        v: PROTOCOL_VERSION,
        meterId,
        periodStart: new Date(start).toISOString(),
        currency: priceAt(this.ctx.store.db, h.supplierId, this.ctx.clock.now())?.currency ?? 'GBP',
        runningTotalMinor: Number(roundHalfEven(micro)),
        intervalsBilled: energyIntervals,
        asOf: new Date(this.ctx.clock.now()).toISOString(),
      };
      await this.ctx.router.reply({ role: 'meter', id: meterId }, 'bill', {
        v: PROTOCOL_VERSION,
        jws: await signContent('bill', bill, this.ctx.signingKey),
      });
    }
  }

  /** Work started by a timer: its failure is logged, never an unhandled rejection; after stop() it is dropped. */
  private background(work: Promise<unknown>, what: string): Promise<void> {
    return work.then(
      () => undefined,
      (err: Error) => {
        if (!this.stopped) this.ctx.log.error({ err: err.message }, `${what} failed`);
      },
    );
  }

  private stopped = false;

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) this.ctx.clock.clearTimeout(t);
    for (const t of this.repeating.values()) this.ctx.clock.clearTimeout(t);
  }
}
