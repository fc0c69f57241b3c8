/**
 * The owner shard's side of a DNO group spanning shards (issue 21): each member shard charges its
 * own households' budgets and sends its exact clamped partial sum and its Delta; the owner (the
 * first member shard by name) collects one partial per member shard for a (group, interval) and
 * completes it once all arrived, or when the grace after its own partial ran out, with those that
 * came (the late shards' households count as missing, their budgets stay charged: privacy-safe).
 * One noise sample is added to the combined total by the caller: noising each partial would
 * multiply the noise.
 *
 * Kept in the shard's store (`group_partials`, journaled like every table), so a restart or a
 * failover to the shard's standby resumes a pending release: one row per (group, interval, member
 * shard) holding the shard's sum and Delta (sums, no household), the owner's own row also the
 * shards expected and when its grace ends. The owner's row is written in the commit that charges
 * its households; `resume` re-arms the grace from the stored time. A partial stored once is a
 * repeat when it comes again. The rows of a (group, interval) are deleted in the transaction that
 * reads them to complete it, so it completes once, whichever TRE is primary; rows the owner never
 * took up (a group it does not release) go after `prune`'s age.
 */
import { type Clock, PendingTimers } from '@tre/protocol';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';

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

/** One group's interval. */
export interface PartialKey {
  dnoId: string;
  groupId: string;
  intervalStart: number;
}

/** What the owner does once a group interval's partials are complete (or its grace ran out). */
export type Completion = (key: PartialKey, partials: Map<string, Partial>, late: string[]) => void;

const SCHEMA = `CREATE TABLE group_partials (dno_id TEXT NOT NULL, group_id TEXT NOT NULL, interval_start INTEGER NOT NULL,
    shard TEXT NOT NULL, total_wh INTEGER NOT NULL, delta_wh INTEGER NOT NULL, received_at INTEGER NOT NULL,
    expected TEXT, due INTEGER, PRIMARY KEY (dno_id, group_id, interval_start, shard));`;

const WHERE_KEY = 'dno_id = ? AND group_id = ? AND interval_start = ?';
const args = (k: PartialKey) => [k.dnoId, k.groupId, k.intervalStart] as const;
const keyText = (k: PartialKey) => `${k.dnoId}/${k.groupId}/${k.intervalStart}`;

export class GroupPartials {
  private readonly timers: PendingTimers;
  /** The owner's armed graces, by group interval. */
  private readonly armed = new Map<string, () => void>();

  constructor(
    private readonly deps: { store: Store; clock: Clock; log: Logger },
    private readonly graceMs: number,
    private readonly complete: Completion,
  ) {
    deps.store.migrate('group-partials-1', SCHEMA);
    this.timers = new PendingTimers(deps.clock);
  }

  /** A member shard's partial (one per shard and group interval). Inside a commit; false: a repeat. */
  add(key: PartialKey, shard: string, partial: Partial): boolean {
    return (
      this.deps.store
        .statement(
          `INSERT OR IGNORE INTO group_partials (dno_id, group_id, interval_start, shard, total_wh, delta_wh, received_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(...args(key), shard, partial.totalWh, partial.deltaWh, this.deps.clock.now()).changes === 1
    );
  }

  /**
   * The owner's own partial and the member shards expected; its grace runs from now. Inside the
   * commit that charges the owner's households (then `settle`).
   */
  own(key: PartialKey, shard: string, partial: Partial, expected: readonly string[]): void {
    const now = this.deps.clock.now();
    this.deps.store
      .statement(
        `INSERT OR REPLACE INTO group_partials (dno_id, group_id, interval_start, shard, total_wh, delta_wh, received_at, expected, due)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        ...args(key),
        shard,
        partial.totalWh,
        partial.deltaWh,
        now,
        JSON.stringify(expected),
        now + this.graceMs,
      );
  }

  /** Whether the owner waits for this group interval's partials (its own is in, it is not complete). */
  waiting(key: PartialKey): boolean {
    return this.ownRow(key) !== undefined;
  }

  /** After the commit of `add` or `own`: arms the owner's grace (once), completes once all are here. */
  async settle(key: PartialKey): Promise<void> {
    const own = this.ownRow(key);
    if (!own) return;
    this.arm(key, own.due);
    await this.finish(key, false);
  }

  /**
   * The pending releases kept (after a restart or a takeover): their graces re-armed at the stored
   * times (at once, as it returns); one whose partials are all in completes now.
   */
  async resume(): Promise<void> {
    const rows = this.deps.store
      .statement(
        `SELECT dno_id AS dnoId, group_id AS groupId, interval_start AS intervalStart, due
         FROM group_partials WHERE expected IS NOT NULL`,
      )
      .all() as (PartialKey & { due: number })[];
    const keys = rows.map(({ due, ...key }) => {
      this.arm(key, due);
      return key;
    });
    for (const key of keys) await this.finish(key, false);
  }

  /** Deletes partials the owner never took up (a group it does not release), older than `maxAgeMs`. */
  async prune(maxAgeMs: number): Promise<void> {
    const before = this.deps.clock.now() - maxAgeMs;
    await this.deps.store.commit(() =>
      this.deps.store
        .statement(
          `DELETE FROM group_partials AS p WHERE received_at < ? AND NOT EXISTS (SELECT 1 FROM group_partials AS o
             WHERE o.dno_id = p.dno_id AND o.group_id = p.group_id AND o.interval_start = p.interval_start
             AND o.expected IS NOT NULL)`,
        )
        .run(before),
    );
  }

  /** Stops the graces (stop); what is kept stays for the next start. */
  clear(): void {
    this.timers.clear();
    this.armed.clear();
  }

  private ownRow(key: PartialKey): { expected: string; due: number } | undefined {
    return this.deps.store
      .statement(`SELECT expected, due FROM group_partials WHERE ${WHERE_KEY} AND expected IS NOT NULL`)
      .get(...args(key)) as { expected: string; due: number } | undefined;
  }

  private arm(key: PartialKey, due: number): void {
    const text = keyText(key);
    if (this.armed.has(text)) return;
    const cancel = this.timers.after(Math.max(0, due - this.deps.clock.now()), () => {
      this.armed.delete(text);
      this.finish(key, true).catch((err: Error) =>
        this.deps.log.error(
          { err: err.message },
          'completing the partials of a group spanning shards failed',
        ),
      );
    });
    this.armed.set(text, cancel);
  }

  /** Completes once: when every expected shard's partial is here, or (`due`) with those that came. */
  private async finish(key: PartialKey, due: boolean): Promise<void> {
    const { store } = this.deps;
    const done = await store.commit(() => {
      const own = this.ownRow(key);
      if (!own) return undefined;
      const rows = store
        .statement(
          `SELECT shard, total_wh AS totalWh, delta_wh AS deltaWh FROM group_partials WHERE ${WHERE_KEY}`,
        )
        .all(...args(key)) as ({ shard: string } & Partial)[];
      const received = new Map(rows.map((r) => [r.shard, { totalWh: r.totalWh, deltaWh: r.deltaWh }]));
      const late = (JSON.parse(own.expected) as string[]).filter((s) => !received.has(s));
      if (!due && late.length > 0) return undefined;
      store.statement(`DELETE FROM group_partials WHERE ${WHERE_KEY}`).run(...args(key));
      return { received, late };
    });
    if (!done) return;
    this.armed.get(keyText(key))?.();
    this.armed.delete(keyText(key));
    this.complete(key, done.received, done.late);
  }
}
