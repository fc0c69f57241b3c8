/**
 * Suppliers' tariffs as the TRE keeps them: verified (supplier signature, signer = supplier of the
 * topic), shaped by the regulator's rules (tariff-rules.ts), not overlapping the supplier's other
 * tariffs, and for future intervals only (a tariff may start neither before now nor before the
 * supplier's open billing period: a reading already received is never priced or repriced). Prices
 * are looked up per instant: the price of the tariff interval that contains it.
 *
 * Price lookups are cached: a stored tariff never changes (no update, no delete, ids unique per
 * supplier, no overlaps), so each is parsed once and kept, with its window, in a cache bounded by
 * the number of prices it holds (least recently used out first). A lookup covered by a cached
 * tariff needs no SQL. `add` drops the cache, and until the transaction that added a tariff has
 * ended (the next tick) lookups bypass it, so a tariff rolled back is never cached.
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

/** Prices the lookup cache holds at most (10,000-price tariffs: 100 of them, about 8 MB). */
export const TARIFF_CACHE_PRICES = 1_000_000;

/** A stored tariff as priced: parsed once. */
interface PricedTariff {
  key: string;
  supplierId: string;
  from: number;
  to: number;
  stepMs: number;
  prices: readonly number[];
  currency: string;
}

export class TariffBook {
  /** Parsed tariffs by supplier and tariff id, least recently used first. */
  private readonly cache = new Map<string, PricedTariff>();
  /** The cached tariffs of each supplier (the windows a lookup tries before SQL). */
  private readonly bySupplier = new Map<string, PricedTariff[]>();
  private cachedPrices = 0;
  /** A tariff was added in a transaction that may not have ended yet: lookups bypass the cache. */
  private addPending = false;

  private constructor(
    private readonly store: Store,
    private readonly maxCachedPrices = TARIFF_CACHE_PRICES,
  ) {}

  static open(store: Store, maxCachedPrices = TARIFF_CACHE_PRICES): TariffBook {
    store.migrate('tariffs-1', SCHEMA);
    return new TariffBook(store, maxCachedPrices);
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
    this.clearCache();
    if (!this.addPending) {
      this.addPending = true;
      // The commit runs synchronously within this tick: by the next one it has committed or rolled back.
      setImmediate(() => {
        this.addPending = false;
        this.clearCache();
      });
    }
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
    const tariff = this.tariffAt(supplierId, t);
    if (!tariff) return undefined;
    const price = tariff.prices[Math.floor((t - tariff.from) / tariff.stepMs)];
    return price === undefined ? undefined : { price, currency: tariff.currency };
  }

  /** Only the price of `priceAt` (what billing a reading needs, without an object per part). */
  pricePerMWhAt(supplierId: string, t: number): number | undefined {
    const tariff = this.tariffAt(supplierId, t);
    return tariff?.prices[Math.floor((t - tariff.from) / tariff.stepMs)];
  }

  /** The supplier's tariff whose window contains `t`: from the cache, else from SQL (then cached). */
  private tariffAt(supplierId: string, t: number): PricedTariff | undefined {
    if (!this.addPending) {
      const cached = this.bySupplier.get(supplierId)?.find((p) => p.from <= t && t < p.to);
      if (cached) {
        this.cache.delete(cached.key); // most recently used goes last
        this.cache.set(cached.key, cached);
        return cached;
      }
    }
    const row = this.store
      .statement(
        'SELECT tariff_id FROM tariffs WHERE supplier_id = ? AND valid_from <= ? AND valid_to > ? LIMIT 1',
      )
      .get(supplierId, t, t) as { tariff_id: string } | undefined;
    if (!row) return undefined;
    const key = `${supplierId}\u0000${row.tariff_id}`;
    if (!this.addPending) {
      const cached = this.cache.get(key);
      if (cached) return cached;
    }
    const body = this.store
      .statement('SELECT body FROM tariffs WHERE supplier_id = ? AND tariff_id = ?')
      .get(supplierId, row.tariff_id) as { body: string };
    const tariff = JSON.parse(body.body) as Tariff;
    const priced: PricedTariff = {
      key,
      supplierId,
      from: Date.parse(tariff.validFrom),
      to: Date.parse(tariff.validTo),
      stepMs: tariff.intervalMinutes * 60_000,
      prices: tariff.pricesPerMWh,
      currency: tariff.currency,
    };
    if (!this.addPending) this.remember(priced);
    return priced;
  }

  private remember(p: PricedTariff): void {
    this.cache.set(p.key, p);
    this.cachedPrices += p.prices.length;
    const list = this.bySupplier.get(p.supplierId);
    if (list) list.push(p);
    else this.bySupplier.set(p.supplierId, [p]);
    for (const [key, old] of this.cache) {
      if (this.cachedPrices <= this.maxCachedPrices || old === p) break;
      this.cache.delete(key);
      this.cachedPrices -= old.prices.length;
      const rest = this.bySupplier.get(old.supplierId)?.filter((x) => x !== old) ?? [];
      if (rest.length > 0) this.bySupplier.set(old.supplierId, rest);
      else this.bySupplier.delete(old.supplierId);
    }
  }

  private clearCache(): void {
    this.cache.clear();
    this.bySupplier.clear();
    this.cachedPrices = 0;
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
