/**
 * The TRE's flows wired from their narrow dependencies: every table's owner opened once, every
 * service given what it uses, nothing started. `startTre` wires them behind the broker; tests and
 * benchmarks wire them behind an in-memory outbound.
 */
import { type BillingOptions, BillingService } from './billing/billing-service.js';
import { EnergyLines } from './billing/energy-lines.js';
import { migrateLedger } from './billing/ledger.js';
import { PeriodBook } from './billing/period-book.js';
import { StatementBook } from './billing/statement-book.js';
import { TariffBook } from './billing/tariff-book.js';
import { TariffService } from './billing/tariff-service.js';
import {
  type DemandResponseOptions,
  DemandResponseService,
} from './demand-response/demand-response-service.js';
import { DrBook } from './demand-response/dr-book.js';
import type { FlowBase } from './flow-base.js';
import { ReadingIngest } from './ingest/reading-ingest.js';
import { ReadingStore } from './ingest/reading-store.js';
import { GroupBook } from './monitoring/group-book.js';
import { type MonitoringOptions, MonitoringService } from './monitoring/monitoring-service.js';
import { PrivacyBudget, toMicro } from './monitoring/privacy-budget.js';
import { RegulatorConfig } from './regulator/regulator-config.js';
import { type RetentionOptions, RetentionService } from './retention/retention-service.js';

export type { FlowBase };

export interface FlowOptions {
  monitoring?: MonitoringOptions;
  billing?: BillingOptions;
  demandResponse?: DemandResponseOptions;
  retention?: RetentionOptions;
}

export interface Flows {
  readings: ReadingStore;
  ingest: ReadingIngest;
  monitoring: MonitoringService;
  regulatorConfig: RegulatorConfig;
  tariffs: TariffService;
  billing: BillingService;
  demandResponse: DemandResponseService;
  /** The bids and their pseudonyms (benchmarks set up rounds with it). */
  drBook: DrBook;
  /** Deletes readings, alerts and pseudonym maps no longer needed (retention/retention-rule.ts). */
  retention: RetentionService;
  /** Registers every flow's handlers and timers, in dependency order. */
  start(): void;
  /** Stops every timer; resolves when work they started and that publishes has finished. */
  stop(): Promise<void>;
}

export function wireFlows(base: FlowBase, opts: FlowOptions = {}): Flows {
  const { store, log } = base;
  const readings = ReadingStore.open(store);
  migrateLedger(store);
  const tariffBook = TariffBook.open(store);
  const regulatorConfig = RegulatorConfig.open(store, {
    ...(opts.billing?.minPeriod && { minPeriod: opts.billing.minPeriod }),
    ...(opts.billing?.tariffRules && { tariffRules: opts.billing.tariffRules }),
  });
  const ingest = new ReadingIngest({
    ...base,
    readings,
    regulatorId: () => regulatorConfig.regulatorId(),
    log: log.child({ module: 'ingest' }),
  });
  const groups = GroupBook.open(store);
  const monitoring = new MonitoringService(
    {
      ...base,
      groups,
      budget: PrivacyBudget.open(store, {
        dailyMicro: toMicro(opts.monitoring?.dailyBudget ?? 100),
        rollingMicro: toMicro(opts.monitoring?.rollingBudget ?? 1_500),
        rollingDays: opts.monitoring?.rollingDays ?? 30,
      }),
      readings,
      contributionBoundWh: () => regulatorConfig.contributionBoundWh(),
      log: log.child({ module: 'monitoring' }),
    },
    opts.monitoring,
  );
  const energyLines = new EnergyLines({ registry: base.registry, tariffs: tariffBook });
  const periods = PeriodBook.open(store);
  const statements = StatementBook.open(store);
  const billing = new BillingService(
    {
      ...base,
      periods,
      statements,
      tariffs: tariffBook,
      energyLines,
      regulatorConfig,
      ingest,
      log: log.child({ module: 'billing' }),
    },
    opts.billing,
  );
  const tariffs = new TariffService({
    ...base,
    tariffs: tariffBook,
    regulatorConfig,
    openPeriodStart: (supplierId) => billing.openPeriodStart(supplierId),
    log: log.child({ module: 'tariffs' }),
  });
  const drBook = DrBook.open(store);
  const demandResponse = new DemandResponseService(
    {
      ...base,
      dr: drBook,
      readings,
      groupMembers: (dnoId, groupId) => monitoring.groups(dnoId).find((g) => g.groupId === groupId)?.meters,
      log: log.child({ module: 'demand-response' }),
    },
    opts.demandResponse,
  );
  const retention = new RetentionService(
    {
      ...base,
      readings,
      periods,
      statements,
      groups,
      dr: drBook,
      // The monitoring service's release schedule (its defaults: 30-minute intervals, 5 minutes after their end).
      release: {
        intervalMs: (opts.monitoring?.releaseMinutes ?? 30) * 60_000,
        delayMs: opts.monitoring?.releaseDelayMs ?? 5 * 60_000,
      },
      log: log.child({ module: 'retention' }),
    },
    opts.retention,
  );
  return {
    readings,
    ingest,
    monitoring,
    regulatorConfig,
    tariffs,
    billing,
    demandResponse,
    drBook,
    retention,
    start() {
      ingest.start();
      monitoring.start();
      regulatorConfig.serve(base.router);
      tariffs.start();
      billing.start();
      demandResponse.start();
      retention.start();
    },
    async stop() {
      retention.stop();
      billing.stop();
      demandResponse.stop();
      await monitoring.stop();
    },
  };
}
