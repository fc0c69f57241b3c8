/**
 * The billing flow (paper III-B) in the TRE. The supplier learns one signed total per household
 * per billing period and nothing finer:
 *  - ledger: every stored in-bounds reading is billed in its own transaction (energy-lines.ts);
 *    tariffs come through the tariff service (tariff-service.ts);
 *  - periods: the supplier's period, never shorter than the regulator's signed minimum
 *    (period-calendar.ts); after each period end (plus a grace hour for the period's last
 *    readings) one TRE-signed statement per household goes to the supplier and to the household,
 *    durably stored first (statement-book.ts) and re-sent until the supplier acknowledges it;
 *  - households get their running bill, TRE-signed, on their inbox (at most every `billEveryMs`).
 */

import type { KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import {
  type Bill,
  billingPeriodRequestSchema,
  type Clock,
  decodePayload,
  PendingTimers,
  type PeriodLength,
  PROTOCOL_VERSION,
  type Statement,
  signContent,
  statementAckSchema,
  topics,
} from '@tre/protocol';
import {
  type HandlerResult,
  type InboundMessage,
  type MessageRouter,
  type Outbound,
  refusal,
  refusalOf,
} from '../broker/message-router.js';
import type { ReadingIngest } from '../ingest/reading-ingest.js';
import type { Logger } from '../log.js';
import type { HouseholdRegistry } from '../registry/household-registry.js';
import type { RegulatorConfig } from '../regulator/regulator-config.js';
import type { Store } from '../store/store.js';
import type { EnergyLines } from './energy-lines.js';
import { closeLines, openTotal, roundHalfEven } from './ledger.js';
import type { PeriodBook, SupplierPeriod } from './period-book.js';
import { atLeast, currentPeriod, expectedIntervals, periodsBetween } from './period-calendar.js';
import type { StatementBook } from './statement-book.js';
import type { TariffBook } from './tariff-book.js';

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

export interface BillingDeps {
  store: Store;
  periods: PeriodBook;
  statements: StatementBook;
  tariffs: TariffBook;
  energyLines: EnergyLines;
  regulatorConfig: RegulatorConfig;
  ingest: ReadingIngest;
  registry: HouseholdRegistry;
  router: MessageRouter;
  outbound: Outbound;
  clock: Clock;
  log: Logger;
  signingKey: KeyObject;
}

export class BillingService {
  /** The pending statement timer of each supplier, and the pending round of each repeated job. */
  private readonly timers: PendingTimers;
  private readonly periodTimers = new Map<string, () => void>();
  private readonly dirty = new Set<string>();
  private stopped = false;
  private delivering: Promise<number> = Promise.resolve(0);
  readonly stats = { statements: 0, resent: 0 };

  constructor(
    private readonly deps: BillingDeps,
    private readonly options: BillingOptions = {},
  ) {
    this.timers = new PendingTimers(deps.clock);
  }

  start(): void {
    const { router, ingest, energyLines } = this.deps;
    ingest.onCommitted((db, r) => {
      if (energyLines.bill(db, r.meterId, r.intervalStart, r.effectiveWh)) this.dirty.add(r.meterId);
    });
    router.on('billing-period', (m) => this.handlePeriod(m));
    router.on('statement-ack', (m) => this.handleAck(m));
    for (const p of this.deps.periods.all()) this.schedule(p);
    this.every(this.options.resendMs ?? 10 * 60_000, 'statement re-send', () => this.resendUnacked());
    this.every(this.options.billEveryMs ?? 60 * 60_000, 'running bills', () => this.sendBills());
    void this.background(this.deliverPending(), 'statement delivery');
  }

  private get grace(): number {
    return this.options.statementGraceMs ?? 3_600_000;
  }

  /** Start of the supplier's open billing period, if it has a calendar. */
  openPeriodStart(supplierId: string): number | undefined {
    const p = this.deps.periods.of(supplierId);
    return p ? this.currentPeriod(p).start : undefined;
  }

  private currentPeriod(p: SupplierPeriod): { start: number; end: number } {
    return currentPeriod(p.startsAt, p.length, this.grace, this.deps.clock.now());
  }

  private async handlePeriod(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, billingPeriodRequestSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, startsAt, length } = decoded.value;
    const min = this.deps.regulatorConfig.minPeriod();
    if (!atLeast(length, min))
      return refusal(
        requestId,
        'PERIOD_TOO_SHORT',
        `the regulator's minimum billing period is ${min.count} ${min.unit}(s)`,
      );
    const period: SupplierPeriod = { supplierId: msg.from.id, startsAt: Date.parse(startsAt), length };
    await this.deps.store.commit(() => this.deps.periods.put(period));
    this.schedule(period);
    return {
      status: 'accepted',
      requestId,
      message: `billing period ${length.count} ${length.unit}(s) from ${startsAt}`,
    };
  }

  private async handleAck(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, statementAckSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const acked = await this.deps.store.commit(() =>
      this.deps.statements.acknowledge(msg.from.id, decoded.value.statementIds),
    );
    return {
      status: 'accepted',
      requestId: decoded.value.requestId,
      message: `${acked} statements acknowledged`,
    };
  }

  private schedule(p: SupplierPeriod): void {
    this.periodTimers.get(p.supplierId)?.();
    const { start, end } = this.currentPeriod(p);
    // Periods that ended while the TRE was down (after the last one stated) are stated now.
    const last = this.deps.statements.lastStated(p.supplierId);
    if (last !== undefined)
      for (const missed of periodsBetween(last, p.length, start))
        void this.background(this.closePeriod(p.supplierId, missed.start, missed.end), 'late statements');
    this.periodTimers.set(
      p.supplierId,
      this.timers.after(Math.max(0, end + this.grace - this.deps.clock.now()), () => {
        this.closePeriod(p.supplierId, start, end).then(
          () => this.schedule(p),
          (err: Error) => {
            this.deps.log.error({ err: err.message, supplier: p.supplierId }, 'statements failed; retrying');
            this.schedule(p);
          },
        );
      }),
    );
  }

  /**
   * Issues one statement per household of the supplier for the period ending at `end`. The
   * statement rows and the closing of their ledger lines commit together; signing and delivery
   * follow, and a crash in between is finished by `deliverPending` at the next start.
   */
  async closePeriod(supplierId: string, start: number, end: number): Promise<number> {
    const { registry, tariffs, statements, store } = this.deps;
    const households = registry.metersOfSupplier(supplierId);
    const expected = expectedIntervals(start, end);
    await store.commit((db) => {
      const currency =
        (tariffs.priceAt(supplierId, start) ?? tariffs.priceAt(supplierId, end - 1))?.currency ?? 'GBP';
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
        // Not issued before a restart: its lines are closed with it.
        if (statements.add(h.meterId, start, statement))
          closeLines(db, h.meterId, end, statement.statementId);
      }
    });
    return this.deliverPending();
  }

  /** Signs stored statements that have no signature yet and delivers them (one run at a time). */
  deliverPending(): Promise<number> {
    this.delivering = this.delivering.catch(() => 0).then(() => this.signAndDeliver());
    return this.delivering;
  }

  private async signAndDeliver(): Promise<number> {
    const { statements, store, outbound, router, signingKey } = this.deps;
    const signed = await Promise.all(
      statements
        .unsigned()
        .map(async (s) => ({ ...s, jws: await signContent('statement', s.statement, signingKey) })),
    );
    await store.commit(() => {
      for (const s of signed) statements.setSignature(s.statementId, s.jws);
    });
    for (const s of signed) {
      const body = { v: PROTOCOL_VERSION, jws: s.jws };
      await outbound.publish(topics.statement(s.supplierId), JSON.stringify(body));
      await router.reply({ role: 'meter', id: s.meterId }, 'statement', body);
    }
    this.stats.statements += signed.length;
    return signed.length;
  }

  /** Runs `work` every `ms` (clock time) until stop(); a failure is logged and the next round still comes. */
  private every(ms: number, what: string, work: () => Promise<unknown>): void {
    if (this.stopped) return;
    this.timers.after(ms, () => {
      void this.background(work(), what).finally(() => this.every(ms, what, work));
    });
  }

  async resendUnacked(): Promise<number> {
    const rows = this.deps.statements.unacknowledged();
    for (const r of rows)
      await this.deps.outbound.publish(
        topics.statement(r.supplierId),
        JSON.stringify({ v: PROTOCOL_VERSION, jws: r.jws }),
      );
    this.stats.resent += rows.length;
    return rows.length;
  }

  /** Sends each household whose bill changed its TRE-signed running bill. */
  async sendBills(): Promise<void> {
    const { registry, store, tariffs, clock, router, signingKey } = this.deps;
    const meters = [...this.dirty];
    this.dirty.clear();
    for (const meterId of meters) {
      const h = registry.get(meterId);
      if (!h) continue;
      const start = this.openPeriodStart(h.supplierId) ?? 0;
      const { micro, energyIntervals } = openTotal(store.db, meterId, Number.MAX_SAFE_INTEGER);
      const bill: Bill = {
        v: PROTOCOL_VERSION,
        meterId,
        periodStart: new Date(start).toISOString(),
        currency: tariffs.priceAt(h.supplierId, clock.now())?.currency ?? 'GBP',
        runningTotalMinor: Number(roundHalfEven(micro)),
        intervalsBilled: energyIntervals,
        asOf: new Date(clock.now()).toISOString(),
      };
      await router.reply({ role: 'meter', id: meterId }, 'bill', {
        v: PROTOCOL_VERSION,
        jws: await signContent('bill', bill, signingKey),
      });
    }
  }

  /** Work started by a timer: its failure is logged, never an unhandled rejection; after stop() it is dropped. */
  private background(work: Promise<unknown>, what: string): Promise<void> {
    return work.then(
      () => undefined,
      (err: Error) => {
        if (!this.stopped) this.deps.log.error({ err: err.message }, `${what} failed`);
      },
    );
  }

  stop(): void {
    this.stopped = true;
    this.timers.clear();
  }
}
