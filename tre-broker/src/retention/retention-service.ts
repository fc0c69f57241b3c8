/**
 * Retention (issue 17): deletes what the TRE no longer needs, once at start and then every
 * `everyMs` (default one hour) of the TRE's clock. The rule is retention-rule.ts; the deleting is
 * the tables' owners':
 *  - per supplier with a calendar, its households' readings before the horizon
 *    (`ReadingStore.deleteBefore`, in batches of `batchSize` rows per transaction so a backlog
 *    never holds the store for long) and the alerts raised before it (`deleteAlertsBefore`);
 *  - per settled or cancelled DR event, its bids: the pseudonym <-> household map (`DrBook.forgetPseudonyms`).
 * What stays: the ledger, statements, releases, budgets, DR events (with the DSM's signed
 * acceptance). Counts are logged at debug only; nothing logged names a household, bid or event.
 */
import { BASELINE_LOOKBACK_DAYS, PendingTimers } from '@tre/protocol';
import type { PeriodBook } from '../billing/period-book.js';
import type { StatementBook } from '../billing/statement-book.js';
import type { DrBook } from '../demand-response/dr-book.js';
import type { FlowBase } from '../flow-base.js';
import type { ReadingStore } from '../ingest/reading-store.js';
import type { GroupBook } from '../monitoring/group-book.js';
import { billedBefore, pseudonymsMayGo, retentionHorizon } from './retention-rule.js';

export interface RetentionOptions {
  /** The rule runs this often, in TRE clock time (default 1 hour), and once at start. */
  everyMs?: number;
  /** Readings deleted per transaction (default 10,000). */
  batchSize?: number;
}

export interface RetentionDeps extends Pick<FlowBase, 'store' | 'registry' | 'clock' | 'log'> {
  readings: ReadingStore;
  periods: PeriodBook;
  statements: StatementBook;
  groups: GroupBook;
  dr: DrBook;
  /** The monitoring release schedule: interval length, and the delay after its end. */
  release: { intervalMs: number; delayMs: number };
}

/** What one run deleted. */
export interface RetentionCounts {
  readings: number;
  alerts: number;
  /** Bids (pseudonym map entries) of settled events. */
  bids: number;
}

export class RetentionService {
  private readonly timers: PendingTimers;
  private stopped = false;
  private running: Promise<RetentionCounts> = Promise.resolve({ readings: 0, alerts: 0, bids: 0 });
  /** Totals over all runs (operator statistics). */
  readonly stats = { runs: 0, readings: 0, alerts: 0, bids: 0 };

  constructor(
    private readonly deps: RetentionDeps,
    private readonly options: RetentionOptions = {},
  ) {
    this.timers = new PendingTimers(deps.clock);
  }

  start(): void {
    this.stopped = false;
    void this.background();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timers.after(this.options.everyMs ?? 3_600_000, () => {
      void this.background().finally(() => this.schedule());
    });
  }

  /** A run started by start() or the timer: a failure is logged (never an id), and the next run still comes. */
  private background(): Promise<void> {
    return this.run().then(
      () => undefined,
      (err: Error) => {
        if (!this.stopped) this.deps.log.error({ err: err.message }, 'retention run failed');
      },
    );
  }

  /** Applies the rule now (one run at a time); resolves with what it deleted. */
  run(): Promise<RetentionCounts> {
    this.running = this.running.catch(() => undefined).then(() => this.sweep());
    return this.running;
  }

  private async sweep(): Promise<RetentionCounts> {
    const { store, registry, readings, periods, statements, groups, dr, clock, release } = this.deps;
    const batch = this.options.batchSize ?? 10_000;
    const now = clock.now();
    const shared = {
      now,
      releaseMs: release.intervalMs,
      releaseDelayMs: release.delayMs,
      slowestRelease: groups.slowestRelease(),
      baselineLookbackDays: BASELINE_LOOKBACK_DAYS,
      earliestUnsettledWindow: dr.earliestUnsettledWindow(),
    };
    const counts: RetentionCounts = { readings: 0, alerts: 0, bids: 0 };
    for (const supplierId of periods.suppliers()) {
      const horizon = retentionHorizon({
        ...shared,
        billedBefore: billedBefore(periods.of(supplierId), statements.lastStated(supplierId)),
      });
      if (horizon === undefined) continue;
      const meters = registry.metersOfSupplier(supplierId).map((h) => h.meterId);
      if (meters.length === 0) continue;
      for (;;) {
        const n = await store.commit(() => readings.deleteBefore(horizon, meters, batch));
        counts.readings += n;
        if (n < batch || this.stopped) break;
      }
      counts.alerts += await store.commit(() => readings.deleteAlertsBefore(horizon, meters));
    }
    for (const e of dr.eventsWithBids())
      if (pseudonymsMayGo(e.stage)) counts.bids += await store.commit(() => dr.forgetPseudonyms(e.eventId));
    this.stats.runs++;
    this.stats.readings += counts.readings;
    this.stats.alerts += counts.alerts;
    this.stats.bids += counts.bids;
    this.deps.log.debug(counts, 'retention run');
    return counts;
  }

  stop(): void {
    this.stopped = true;
    this.timers.clear();
  }
}
