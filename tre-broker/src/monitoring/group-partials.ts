/**
 * The owner shard's side of a DNO group spanning shards (issue 21): each member shard charges its
 * own households' budgets and sends its exact clamped partial sum and its Delta; the owner (the
 * first member shard by name) collects one partial per member shard for a (group, interval) and
 * completes it once all arrived, or when the grace after its own partial ran out, with those that
 * came (the late shards' households count as missing, their budgets stay charged: privacy-safe).
 * One noise sample is added to the combined total by the caller: noising each partial would
 * multiply the noise. Nothing here outlives the process: a restart loses a pending release, never
 * releases twice.
 */
import type { Clock, TimerHandle } from '@tre/protocol';

export interface Partial {
  /** The exact clamped sum of the shard's contributing households, Wh. */
  totalWh: number;
  /** The shard's sensitivity: min(bound, the largest capacity x interval of its members). */
  deltaWh: number;
}

/** The combined total and its sensitivity: the sum, and the largest Delta (that of the whole group). */
export function combinePartials(partials: readonly Partial[]): Partial {
  return {
    totalWh: partials.reduce((sum, p) => sum + p.totalWh, 0),
    deltaWh: Math.max(1, ...partials.map((p) => p.deltaWh)),
  };
}

interface Pending {
  received: Map<string, Partial>;
  /** Set once the owner added its own partial: the member shards and what to do when complete. */
  expected?: readonly string[];
  complete?: (partials: Map<string, Partial>, late: string[]) => void;
  timer?: TimerHandle;
  /** When the first partial arrived (entries the owner never completes are dropped after a while). */
  since: number;
}

export class GroupPartials {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly clock: Clock,
    private readonly graceMs: number,
  ) {}

  private entry(key: string): Pending {
    let p = this.pending.get(key);
    if (!p) {
      p = { received: new Map(), since: this.clock.now() };
      this.pending.set(key, p);
    }
    return p;
  }

  /** A member shard's partial (another shard's, or the owner's own through `own`). False: a repeat. */
  add(key: string, shard: string, partial: Partial): boolean {
    const p = this.entry(key);
    if (p.received.has(shard)) return false;
    p.received.set(shard, partial);
    this.check(key, p);
    return true;
  }

  /** The owner's own partial, the shards expected and what to do once all arrived or the grace ran out. */
  own(
    key: string,
    shard: string,
    partial: Partial,
    expected: readonly string[],
    complete: (partials: Map<string, Partial>, late: string[]) => void,
  ): void {
    const p = this.entry(key);
    p.expected = expected;
    p.complete = complete;
    p.timer = this.clock.setTimeout(() => this.finish(key, p), this.graceMs);
    this.add(key, shard, partial);
  }

  private check(key: string, p: Pending): void {
    if (p.expected?.every((s) => p.received.has(s))) this.finish(key, p);
  }

  private finish(key: string, p: Pending): void {
    if (this.pending.get(key) !== p) return;
    this.pending.delete(key);
    if (p.timer) this.clock.clearTimeout(p.timer);
    const late = (p.expected ?? []).filter((s) => !p.received.has(s));
    p.complete?.(p.received, late);
  }

  /** Drops partials the owner never took up (a group it does not release), older than `maxAgeMs`. */
  prune(maxAgeMs: number): void {
    const now = this.clock.now();
    for (const [key, p] of this.pending)
      if (!p.expected && now - p.since > maxAgeMs) this.pending.delete(key);
  }

  /** Abandons every pending release (stop). */
  clear(): void {
    for (const p of this.pending.values()) if (p.timer) this.clock.clearTimeout(p.timer);
    this.pending.clear();
  }
}
