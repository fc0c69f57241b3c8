/**
 * Suppliers' tariffs as the TRE keeps them: verified (supplier signature, signer = supplier of the
 * topic), shaped by the regulator's rules (tariff-rules.ts), not overlapping the supplier's other
 * tariffs, and for future intervals only (a tariff may start neither before now nor before the
 * supplier's open billing period: a reading already received is never priced or repriced). Prices
 * are looked up per instant: the price of the tariff interval that contains it.
 */
import type { Tariff } from '@tre/protocol';
import type { Store } from '../store/store.js';
import type { PriceSpan } from './tariff-rules.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS tariffs (
    supplier_id TEXT NOT NULL,
    tariff_id TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to INTEGER NOT NULL,
    body TEXT NOT NULL,
    tre_jws TEXT NOT NULL,
    PRIMARY KEY (supplier_id, tariff_id)
  );
  CREATE INDEX IF NOT EXISTS tariffs_window ON tariffs (supplier_id, valid_from);`;

export type TariffProblem = {
  reason: 'MALFORMED' | 'TARIFF_OVERLAP' | 'TARIFF_RETROACTIVE';
  message: string;
};

export class TariffBook {
  private constructor(private readonly store: Store) {}

  static open(store: Store): TariffBook {
    store.migrate('tariffs-1', SCHEMA);
    return new TariffBook(store);
  }

  /** Why `t` cannot be stored, if it cannot: shape, retroactivity (before now or the open period), overlap. */
  check(t: Tariff, openPeriodStart: number | undefined, now: number): TariffProblem | undefined {
    const from = Date.parse(t.validFrom);
    const to = Date.parse(t.validTo);
    const step = t.intervalMinutes * 60_000;
    if (to <= from) return { reason: 'MALFORMED', message: 'validTo must be after validFrom' };
    if (from % step !== 0 || to % step !== 0)
      return {
        reason: 'MALFORMED',
        message: `validity must be aligned to ${t.intervalMinutes}-minute intervals`,
      };
    if (t.pricesPerMWh.length !== (to - from) / step) {
      return {
        reason: 'MALFORMED',
        message: `expected ${(to - from) / step} prices (one per interval), got ${t.pricesPerMWh.length}`,
      };
    }
    const earliest = Math.max(now, openPeriodStart ?? now);
    if (from < earliest)
      return {
        reason: 'TARIFF_RETROACTIVE',
        message: `validFrom is before ${new Date(earliest).toISOString()}: tariffs apply to future intervals only; start it at or after that`,
      };
    const clash = this.store
      .statement(
        'SELECT tariff_id FROM tariffs WHERE supplier_id = ? AND valid_from < ? AND valid_to > ? LIMIT 1',
      )
      .get(t.supplierId, to, from) as { tariff_id: string } | undefined;
    if (clash)
      return { reason: 'TARIFF_OVERLAP', message: `overlaps tariff ${clash.tariff_id} of this supplier` };
    const same = this.store
      .statement('SELECT 1 FROM tariffs WHERE supplier_id = ? AND tariff_id = ?')
      .get(t.supplierId, t.tariffId);
    if (same) return { reason: 'TARIFF_OVERLAP', message: `tariff id ${t.tariffId} is already used` };
    return undefined;
  }

  /** Inside a commit. */
  add(t: Tariff, treJws: string): void {
    this.store
      .statement(
        'INSERT INTO tariffs (supplier_id, tariff_id, valid_from, valid_to, body, tre_jws) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(
        t.supplierId,
        t.tariffId,
        Date.parse(t.validFrom),
        Date.parse(t.validTo),
        JSON.stringify(t),
        treJws,
      );
  }

  /** Price (minor units per MWh) of `supplierId` for the interval starting at `t`, if a tariff covers it. */
  priceAt(supplierId: string, t: number): { price: number; currency: string } | undefined {
    const row = this.store
      .statement(
        'SELECT body FROM tariffs WHERE supplier_id = ? AND valid_from <= ? AND valid_to > ? LIMIT 1',
      )
      .get(supplierId, t, t) as { body: string } | undefined;
    if (!row) return undefined;
    const tariff = JSON.parse(row.body) as Tariff;
    const index = Math.floor((t - Date.parse(tariff.validFrom)) / (tariff.intervalMinutes * 60_000));
    const price = tariff.pricesPerMWh[index];
    return price === undefined ? undefined : { price, currency: tariff.currency };
  }

  /** The supplier's stored prices in [from - windowMs, from), as spans (the tariff rules' reference window). */
  pricesBefore(supplierId: string, from: number, windowMs: number): PriceSpan[] {
    const rows = this.store
      .statement('SELECT body FROM tariffs WHERE supplier_id = ? AND valid_from < ? AND valid_to > ?')
      .all(supplierId, from, from - windowMs) as { body: string }[];
    const spans: PriceSpan[] = [];
    for (const row of rows) {
      const t = JSON.parse(row.body) as Tariff;
      const step = t.intervalMinutes * 60_000;
      t.pricesPerMWh.forEach((p, i) => {
        const start = Math.max(Date.parse(t.validFrom) + i * step, from - windowMs);
        const end = Math.min(Date.parse(t.validFrom) + (i + 1) * step, from);
        if (end > start) spans.push({ minutes: (end - start) / 60_000, pricePerMWh: p });
      });
    }
    return spans;
  }

  /** Each supplier's latest tariff as the TRE signed it (re-broadcast at start). */
  latest(): { supplierId: string; treJws: string }[] {
    const rows = this.store
      .statement(
        'SELECT supplier_id, tre_jws FROM tariffs t WHERE valid_from = (SELECT max(valid_from) FROM tariffs u WHERE u.supplier_id = t.supplier_id)',
      )
      .all() as { supplier_id: string; tre_jws: string }[];
    return rows.map((r) => ({ supplierId: r.supplier_id, treJws: r.tre_jws }));
  }
}
