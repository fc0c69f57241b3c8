/**
 * The billing flow (paper III-B) in the TRE. The supplier learns one signed total per household
 * per billing period and nothing finer:
 *  - ledger: every stored in-bounds reading is billed in its own transaction (energy-lines.ts);
 *    tariffs come through the tariff service (tariff-service.ts);
 *  - periods: the supplier's calendar, never shorter than the regulator's signed minimum, changed
 *    only from a boundary after the open period (period-calendar.ts); after each period end (plus
 *    a grace hour for the period's last readings) one TRE-signed statement per household goes to
 *    the supplier (the total and complete/estimated, nothing finer) and a separately signed copy
 *    with the household's own counts to the household, durably stored first (statement-book.ts)
 *    and re-sent to the supplier until it acknowledges it;
 *  - households get their running bill, TRE-signed, on their inbox (at most every `billEveryMs`).
 */

import { randomBytes } from 'node:crypto';
import {
  type Bill,
  billingPeriodRequestSchema,
  decodePayload,
  type HouseholdStatement,
  PendingTimers,
  type PeriodLength,
  PROTOCOL_VERSION,
  type Statement,
  signContent,
  statementAckSchema,
  type TariffRules,
  topics,
} from '@tre/protocol';
import { type HandlerResult, type InboundMessage, refusal, refusalOf } from '../broker/message-router.js';
import type { FlowBase } from '../flow-base.js';
import type { ReadingIngest } from '../ingest/reading-ingest.js';
import type { RegulatorConfig } from '../regulator/regulator-config.js';
import type { EnergyLines } from './energy-lines.js';
import { closeLines, openTotal, roundHalfEven } from './ledger.js';
import type { PeriodBook } from './period-book.js';
import { changeCalendar, minutesOf, openPeriod, periodsBetween } from './period-calendar.js';
import type { StatementBook } from './statement-book.js';
import type { TariffBook } from './tariff-book.js';

export interface BillingOptions {
  /** The minimum billing period until the regulator signs another (default one month). */
  minPeriod?: PeriodLength;
  /** The tariff-shape rules until the regulator signs others (default DEFAULT_TARIFF_RULES). */
  tariffRules?: TariffRules;
  /** Unacknowledged statements are re-sent this often (default 10 minutes). */
  resendMs?: number;
  /** Households get their running bill at most this often (default 1 hour). */
  billEveryMs?: number;
  /** Statements wait this long after the period end for the period's last readings (default 1 hour). */
  statementGraceMs?: number;
}

export interface BillingDeps
  extends Pick<FlowBase, 'store' | 'registry' | 'router' | 'outbound' | 'clock' | 'log' | 'signingKey'> {
  periods: PeriodBook;
  statements: StatementBook;
  tariffs: TariffBook;
  energyLines: EnergyLines;
  regulatorConfig: RegulatorConfig;
  ingest: ReadingIngest;
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
      if (energyLines.bill(db, r.meterId, r.intervalStart, r.intervalMinutes, r.effectiveWh))
        this.dirty.add(r.meterId);
    });
    router.on('billing-period', (m) => this.handlePeriod(m));
    router.on('statement-ack', (m) => this.handleAck(m));
    for (const supplierId of this.deps.periods.suppliers()) this.schedule(supplierId);
    this.every(this.options.resendMs ?? 10 * 60_000, 'statement re-send', () => this.resendUnacked());
    this.every(this.options.billEveryMs ?? 60 * 60_000, 'running bills', () => this.sendBills());
    void this.background(this.deliverPending(), 'statement delivery');
  }

  private get grace(): number {
    return this.options.statementGraceMs ?? 3_600_000;
  }

  /** Start of the supplier's open billing period, if it has a calendar. */
  openPeriodStart(supplierId: string): number | undefined {
    const calendar = this.deps.periods.of(supplierId);
    return calendar ? openPeriod(calendar, this.grace, this.deps.clock.now()).start : undefined;
  }

  /** A calendar change takes effect at a boundary after the open period (period-calendar.ts). */
  private async handlePeriod(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, billingPeriodRequestSchema);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, startsAt, length } = decoded.value;
    const { store, periods, regulatorConfig, clock } = this.deps;
    const supplierId = msg.from.id;
    const change = await store.commit(() => {
      const c = changeCalendar(
        periods.of(supplierId),
        { startsAt: Date.parse(startsAt), length },
        regulatorConfig.minPeriod(),
        clock.now(),
      );
      if (c.ok) periods.put(supplierId, c.calendar);
      return c;
    });
    if (!change.ok) return refusal(requestId, change.reason, change.message);
    this.schedule(supplierId);
    return {
      status: 'accepted',
      requestId,
      message: `billing periods of ${length.count} ${length.unit}(s) from ${new Date(change.effectiveFrom).toISOString()}`,
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

  private schedule(supplierId: string): void {
    this.periodTimers.get(supplierId)?.();
    const calendar = this.deps.periods.of(supplierId);
    if (!calendar) return;
    const { start, end } = openPeriod(calendar, this.grace, this.deps.clock.now());
    // Periods that ended while the TRE was down (after the last one stated) are stated now.
    const last = this.deps.statements.lastStated(supplierId);
    if (last !== undefined)
      for (const missed of periodsBetween(calendar, last, start))
        void this.background(this.closePeriod(supplierId, missed.start, missed.end), 'late statements');
    this.periodTimers.set(
      supplierId,
      this.timers.after(Math.max(0, end + this.grace - this.deps.clock.now()), () => {
        this.closePeriod(supplierId, start, end).then(
          () => this.schedule(supplierId),
          (err: Error) => {
            this.deps.log.error({ err: err.message, supplier: supplierId }, 'statements failed; retrying');
            this.schedule(supplierId);
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
    const periodMinutes = minutesOf({ start, end });
    await store.commit((db) => {
      const currency =
        (tariffs.priceAt(supplierId, start) ?? tariffs.priceAt(supplierId, end - 1))?.currency ?? 'GBP';
      for (const h of households) {
        const { micro, readings, minutes } = openTotal(db, h.meterId, end, start);
        const minutesMissing = Math.max(0, periodMinutes - minutes);
        const statement: Statement = {
          v: PROTOCOL_VERSION,
          statementId: randomBytes(12).toString('hex'),
          supplierId,
          account: h.account,
          periodStart: new Date(start).toISOString(),
          periodEnd: new Date(end).toISOString(),
          currency,
          totalMinor: Number(roundHalfEven(micro)),
          basis: minutesMissing === 0 ? 'complete' : 'estimated',
        };
        const own: HouseholdStatement = { ...statement, readingsBilled: readings, minutesMissing };
        // Not issued before a restart: its lines are closed with it.
        if (statements.add(h.meterId, start, statement, own))
          closeLines(db, h.meterId, end, statement.statementId);
      }
    });
    return this.deliverPending();
  }

  /** Signs stored statements (both copies) that have no signature yet and delivers them (one run at a time). */
  deliverPending(): Promise<number> {
    this.delivering = this.delivering.catch(() => 0).then(() => this.signAndDeliver());
    return this.delivering;
  }

  private async signAndDeliver(): Promise<number> {
    const { statements, store, outbound, router, signingKey } = this.deps;
    const signed = await Promise.all(
      statements.unsigned().map(async (s) => ({
        ...s,
        jws: await signContent('statement', s.statement, signingKey),
        householdJws: await signContent('householdStatement', s.household, signingKey),
      })),
    );
    await store.commit(() => {
      for (const s of signed) statements.setSignature(s.statementId, s.jws, s.householdJws);
    });
    for (const s of signed) {
      await outbound.publish(
        topics.statement(s.supplierId),
        JSON.stringify({ v: PROTOCOL_VERSION, jws: s.jws }),
      );
      await router.reply({ role: 'meter', id: s.meterId }, 'statement', {
        v: PROTOCOL_VERSION,
        jws: s.householdJws,
      });
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
      const { micro, readings } = openTotal(store.db, meterId, Number.MAX_SAFE_INTEGER);
      const bill: Bill = {
        v: PROTOCOL_VERSION,
        meterId,
        periodStart: new Date(start).toISOString(),
        currency: tariffs.priceAt(h.supplierId, clock.now())?.currency ?? 'GBP',
        runningTotalMinor: Number(roundHalfEven(micro)),
        intervalsBilled: readings,
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
