/**
 * The regulator's signed configuration (`regulator/{r}/config`): today the minimum billing period.
 * Kept in `regulator_config`; read by billing through `minPeriod()`.
 */
import { type PeriodLength, regulatorConfigSchema } from '@tre/protocol';
import type { HandlerResult, InboundMessage, MessageRouter } from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import type { Store } from '../store/store.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS regulator_config (id INTEGER PRIMARY KEY CHECK (id = 1), min_unit TEXT NOT NULL,
  min_count INTEGER NOT NULL, issued_at TEXT NOT NULL);`;

export class RegulatorConfig {
  private constructor(
    private readonly store: Store,
    private readonly defaultMinPeriod: PeriodLength,
  ) {}

  /** `defaultMinPeriod` holds until the regulator signs another (default one month). */
  static open(store: Store, defaultMinPeriod: PeriodLength = { unit: 'month', count: 1 }): RegulatorConfig {
    store.migrate('regulator-config-1', SCHEMA);
    return new RegulatorConfig(store, defaultMinPeriod);
  }

  /** Serves the regulator's `config` topic. */
  serve(router: MessageRouter): void {
    router.on('config', (m) => this.handle(m));
  }

  minPeriod(): PeriodLength {
    const row = this.store.statement('SELECT min_unit, min_count FROM regulator_config WHERE id = 1').get() as
      | { min_unit: 'day' | 'month'; min_count: number }
      | undefined;
    return row ? { unit: row.min_unit, count: row.min_count } : this.defaultMinPeriod;
  }

  private async handle(msg: InboundMessage): Promise<HandlerResult> {
    const signed = await verifySignedRequest(msg, 'regulatorConfig', regulatorConfigSchema);
    if (!signed.ok) return signed.refusal;
    const { unit, count } = signed.content.minBillingPeriod;
    await this.store.commit(() =>
      this.store
        .statement(
          'INSERT INTO regulator_config (id, min_unit, min_count, issued_at) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET min_unit = excluded.min_unit, min_count = excluded.min_count, issued_at = excluded.issued_at',
        )
        .run(unit, count, signed.content.issuedAt),
    );
    return { status: 'accepted', requestId: signed.requestId };
  }
}
