/**
 * The regulator's signed configuration (`regulator/{r}/config`): the minimum billing period, the
 * tariff-shape rules and the per-household contribution bound of the DNO releases (defaults when it
 * signs none). Kept in `regulator_config`; a configuration is accepted only when its `issuedAt` is
 * newer than the one in force, so an older signed one can never be replayed over it, and it
 * replaces the one in force as a whole (what it leaves out goes back to the default). Read by
 * billing through `minPeriod()` and `tariffRules()`, by monitoring through `contributionBoundWh()`
 * at each release interval (so a new bound applies from the next release).
 */
import {
  DEFAULT_TARIFF_RULES,
  type PeriodLength,
  regulatorConfigSchema,
  type TariffRules,
  tariffRulesSchema,
} from '@tre/protocol';
import {
  type HandlerResult,
  type InboundMessage,
  type MessageRouter,
  refusal,
} from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import { DEFAULT_CONTRIBUTION_BOUND_WH } from '../monitoring/aggregate.js';
import type { Store } from '../store/store.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS regulator_config (id INTEGER PRIMARY KEY CHECK (id = 1), min_unit TEXT NOT NULL,
  min_count INTEGER NOT NULL, issued_at TEXT NOT NULL);`;

export interface RegulatorDefaults {
  /** Until the regulator signs another (default one month). */
  minPeriod?: PeriodLength;
  /** Until the regulator signs others (default DEFAULT_TARIFF_RULES). */
  tariffRules?: TariffRules;
  /** Until the regulator signs one, Wh per 30 minutes (default DEFAULT_CONTRIBUTION_BOUND_WH). */
  contributionBoundWh?: number;
}

interface Row {
  min_unit: PeriodLength['unit'];
  min_count: number;
  issued_at: string;
  tariff_rules: string | null;
  contribution_bound_wh: number | null;
}

export class RegulatorConfig {
  private constructor(
    private readonly store: Store,
    private readonly defaults: Required<RegulatorDefaults>,
  ) {}

  static open(store: Store, defaults: RegulatorDefaults = {}): RegulatorConfig {
    store.migrate('regulator-config-1', SCHEMA);
    store.migrate('regulator-config-2', 'ALTER TABLE regulator_config ADD COLUMN tariff_rules TEXT;');
    store.migrate('regulator-config-3', 'ALTER TABLE regulator_config ADD COLUMN issued_by TEXT;');
    store.migrate(
      'regulator-config-4',
      'ALTER TABLE regulator_config ADD COLUMN contribution_bound_wh INTEGER;',
    );
    return new RegulatorConfig(store, {
      minPeriod: defaults.minPeriod ?? { unit: 'month', count: 1 },
      tariffRules: defaults.tariffRules ?? DEFAULT_TARIFF_RULES,
      contributionBoundWh: defaults.contributionBoundWh ?? DEFAULT_CONTRIBUTION_BOUND_WH,
    });
  }

  /** Serves the regulator's `config` topic. */
  serve(router: MessageRouter): void {
    router.on('config', (m) => this.handle(m));
  }

  private row(): Row | undefined {
    return this.store
      .statement(
        'SELECT min_unit, min_count, issued_at, tariff_rules, contribution_bound_wh FROM regulator_config WHERE id = 1',
      )
      .get() as Row | undefined;
  }

  minPeriod(): PeriodLength {
    const row = this.row();
    return row ? { unit: row.min_unit, count: row.min_count } : this.defaults.minPeriod;
  }

  /** The regulator whose configuration is in force (it gets the TRE's bounds-check alerts). */
  regulatorId(): string | undefined {
    const row = this.store.statement('SELECT issued_by FROM regulator_config WHERE id = 1').get() as
      | { issued_by: string | null }
      | undefined;
    return row?.issued_by ?? undefined;
  }

  tariffRules(): TariffRules {
    const rules = this.row()?.tariff_rules;
    return rules ? tariffRulesSchema.parse(JSON.parse(rules)) : this.defaults.tariffRules;
  }

  /**
   * The per-household contribution bound of the DNO releases in force, Wh per 30-minute interval:
   * the regulator's signed one, or the default when the configuration in force has none.
   */
  contributionBoundWh(): number {
    return this.row()?.contribution_bound_wh ?? this.defaults.contributionBoundWh;
  }

  private async handle(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(msg, 'regulatorConfig', regulatorConfigSchema);
    if (!signed.ok) return signed.refusal;
    const { minBillingPeriod, tariffRules, contributionBoundWh, issuedAt } = signed.content;
    const stored = await this.store.commit(() => {
      const inForce = this.row()?.issued_at;
      if (inForce !== undefined && Date.parse(issuedAt) <= Date.parse(inForce)) return inForce;
      this.store
        .statement(
          `INSERT INTO regulator_config (id, min_unit, min_count, issued_at, tariff_rules, issued_by, contribution_bound_wh)
           VALUES (1, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET min_unit = excluded.min_unit, min_count = excluded.min_count,
             issued_at = excluded.issued_at, tariff_rules = excluded.tariff_rules, issued_by = excluded.issued_by,
             contribution_bound_wh = excluded.contribution_bound_wh`,
        )
        .run(
          minBillingPeriod.unit,
          minBillingPeriod.count,
          issuedAt,
          tariffRules ? JSON.stringify(tariffRules) : null,
          msg.from.id,
          contributionBoundWh ?? null,
        );
      return undefined;
    });
    if (stored !== undefined)
      return refusal(
        signed.requestId,
        'REPLAYED',
        `a configuration issued at ${stored} is in force; sign one with a later issuedAt`,
      );
    return { status: 'accepted', requestId: signed.requestId };
  }
}
