/**
 * The energy lines of the ledger: a stored in-bounds reading billed by reading-charge.ts at its
 * supplier's prices, written in the reading's own transaction. Tariffs apply to future intervals
 * only, so a reading without a price when it arrives stays unbilled (its statement says
 * `estimated`); no later tariff ever reprices a reading already received.
 */
import type { HouseholdRegistry } from '../registry/household-registry.js';
import type { Db } from '../store/store.js';
import { postEnergy } from './ledger.js';
import { readingCharge } from './reading-charge.js';
import type { TariffBook } from './tariff-book.js';

export class EnergyLines {
  constructor(private readonly deps: { registry: HouseholdRegistry; tariffs: TariffBook }) {}

  /** Writes a reading's energy line if every part of it has a price; true if written. Inside a commit. */
  bill(db: Db, meterId: string, intervalStart: number, minutes: number, wh: number): boolean {
    const household = this.deps.registry.get(meterId);
    if (!household) return false;
    const { supplierId } = household;
    const micro = readingCharge(intervalStart, minutes, wh, (t) =>
      this.deps.tariffs.pricePerMWhAt(supplierId, t),
    );
    if (micro === undefined) return false;
    return postEnergy(db, meterId, intervalStart, minutes, micro);
  }
}
