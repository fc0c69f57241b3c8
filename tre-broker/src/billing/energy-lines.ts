/**
 * The energy lines of the ledger: a stored in-bounds reading's Wh x its supplier's price for that
 * interval, written when the reading is committed, or, for readings that arrived before a tariff
 * covered them, when that tariff is stored.
 */
import type { ReadingStore } from '../ingest/reading-store.js';
import type { HouseholdRegistry } from '../registry/household-registry.js';
import type { Db } from '../store/store.js';
import { postLine } from './ledger.js';
import type { TariffBook } from './tariff-book.js';

export class EnergyLines {
  constructor(
    private readonly deps: { registry: HouseholdRegistry; tariffs: TariffBook; readings: ReadingStore },
  ) {}

  /** Writes a reading's energy line if its price is known; true if written. Inside a commit. */
  bill(db: Db, meterId: string, intervalStart: number, wh: number): boolean {
    const household = this.deps.registry.get(meterId);
    if (!household) return false;
    const price = this.deps.tariffs.priceAt(household.supplierId, intervalStart);
    if (!price) return false; // billed when the tariff arrives
    return postLine(db, meterId, 'energy', '', intervalStart, wh * price.price);
  }

  /** Bills the supplier's stored readings in [from, to) that were waiting for a price. Inside a commit. */
  billWaiting(db: Db, supplierId: string, from: number, to: number): number {
    const meters = this.deps.registry.metersOfSupplier(supplierId).map((h) => h.meterId);
    let n = 0;
    for (const r of this.deps.readings.inBoundsOf(meters, from, to))
      if (this.bill(db, r.meterId, r.intervalStart, r.effectiveWh)) n++;
    return n;
  }
}
