/**
 * The monitoring flow (paper III-A) in the TRE: DNO group definitions, and per group and release
 * interval one noisy total to the DNO, charged to each included household's daily budget.
 *
 * Release: each `releaseMinutes` interval (default 30) is released `releaseDelayMs` (default 5 min)
 * after it ends, for every group, always in the same shape (a noised total and its noise
 * parameters): the arithmetic is `contributions` and `aggregate` (aggregate.ts), the group rules
 * `checkGroups` (group-rules.ts), the budget `PrivacyBudget` (a household without budget left
 * leaves the release, uncharged). Each contribution is clamped to the regulator's contribution
 * bound, read once per interval as its releases begin: every group of an interval has the same
 * bound, and a newly signed one applies from the next interval released. Counts of included,
 * excluded, missing, budget-exhausted or clamped households never leave the TRE (they are kept as
 * totals in `stats`). Each (group, interval) is released at most once, recorded durably, so a
 * restart never releases twice.
 *
 * In a cluster of shards (issue 21) a group whose members live in several shards is released by
 * its owner, the first of those shards by name: every member shard charges its own households and
 * sends its exact partial (sealed, `monitoring.partial`); the owner adds one noise sample to the
 * sum (group-partials.ts). The DNO gets the same single message as from one TRE. The owner keeps
 * the partials in its store until the group's interval is released (group-partials.ts): its own
 * in the commit that charges its households, each member's before it answers it, so a restart or
 * a failover of the owner resumes the release, at the same grace, once.
 */
import {
  type Aggregate,
  decodePayload,
  groupsRequestSchema,
  MAX_BULK_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  type TimerHandle,
  topics,
} from '@tre/protocol';
import { z } from 'zod';
import { type HandlerResult, type InboundMessage, refusalOf } from '../broker/message-router.js';
import type { FlowBase } from '../flow-base.js';
import type { ReadingStore } from '../ingest/reading-store.js';
import { aggregate, contributions, intervalBoundWh } from './aggregate.js';
import type { RandomSource } from './discrete-laplace.js';
import type { Group, GroupBook } from './group-book.js';
import { combinePartials, GroupPartials, type Partial, type PartialKey } from './group-partials.js';
import { checkGroups, DEFAULT_MIN_GROUP_SIZE } from './group-rules.js';
import { type PrivacyBudget, utcDay } from './privacy-budget.js';

export interface MonitoringOptions {
  minGroupSize?: number;
  /** Epsilon of one release as a fraction [p, q] = p/q (default 1/1). */
  epsilon?: [number, number];
  /** Per household per UTC day (default 100). */
  dailyBudget?: number;
  /** Per household over any `rollingDays` consecutive UTC days (default 1,500 over 30 days). */
  rollingBudget?: number;
  rollingDays?: number;
  releaseMinutes?: 15 | 30;
  releaseDelayMs?: number;
  random?: RandomSource;
  /** How long a group's owner shard waits for the other member shards' partials (default 2 min). */
  shardGraceMs?: number;
}

const PARTIAL = 'monitoring.partial';

const partialSchema = z.strictObject({
  dnoId: z.string(),
  groupId: z.string(),
  intervalStart: z.number().int(),
  totalWh: z.number().int().min(0),
  deltaWh: z.number().int().min(1),
});

export interface MonitoringDeps
  extends Pick<FlowBase, 'store' | 'registry' | 'router' | 'outbound' | 'clock' | 'log' | 'cluster'> {
  groups: GroupBook;
  budget: PrivacyBudget;
  readings: ReadingStore;
  /** The per-household contribution bound in force, Wh per 30 minutes (`RegulatorConfig.contributionBoundWh`). */
  contributionBoundWh: () => number;
}

export class MonitoringService {
  private readonly minSize: number;
  private readonly epsilon: [number, number];
  private readonly releaseMs: number;
  private readonly delayMs: number;
  private timer: TimerHandle | undefined;
  /** The release running now, if any: stop() waits for it (it publishes through the broker). */
  private releasing: Promise<void> | undefined;
  private stopped = false;
  private lastReleased = 0;
  /** The owner shard's partials of groups spanning shards, until complete. */
  private readonly partials: GroupPartials;
  /**
   * Totals over all releases (operator statistics; never sent to a DNO). `clamped` contributions
   * were above the bound; `clampedWh` is what clamping cut off (the bias of the released totals).
   */
  readonly stats = {
    released: 0,
    contributions: 0,
    excluded: 0,
    missing: 0,
    outOfBudget: 0,
    clamped: 0,
    clampedWh: 0,
    /** Release runs that failed (each is retried at the next interval). */
    failedRuns: 0,
    /** Member shards whose partial came after the owner's grace (their households counted missing). */
    lateShards: 0,
  };

  constructor(
    private readonly deps: MonitoringDeps,
    private readonly options: MonitoringOptions = {},
  ) {
    this.minSize = Math.max(2, options.minGroupSize ?? DEFAULT_MIN_GROUP_SIZE);
    this.epsilon = options.epsilon ?? [1, 1];
    this.releaseMs = (options.releaseMinutes ?? 30) * 60_000;
    this.delayMs = options.releaseDelayMs ?? 5 * 60_000;
    this.partials = new GroupPartials(deps, options.shardGraceMs ?? 2 * 60_000, (key, got, late) =>
      this.releaseCombined(key, got, late),
    );
  }

  start(): void {
    // Release what ends from now on; what ended before this start was either released or is history.
    this.lastReleased =
      Math.floor((this.deps.clock.now() - this.delayMs - this.releaseMs) / this.releaseMs) * this.releaseMs;
    this.deps.router.on('groups', (msg) => this.handleGroups(msg));
    this.deps.cluster?.on(PARTIAL, (from, body) => this.receivePartial(from, body));
    this.schedule();
    // The owner's pending releases of groups spanning shards, kept from before this start.
    this.partials.resume().catch((err: Error) => {
      this.stats.failedRuns++;
      this.deps.log.error({ err: err.message }, 'resuming the releases of groups spanning shards failed');
    });
  }

  get dailyBudgetMicro(): number {
    return this.deps.budget.dailyMicro;
  }

  groups(dnoId?: string): Group[] {
    return this.deps.groups.groups(dnoId);
  }

  private async handleGroups(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, groupsRequestSchema, MAX_BULK_PAYLOAD_BYTES);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, groups } = decoded.value;
    const dnoId = msg.from.id;
    const refusal = checkGroups(
      groups,
      this.groups(dnoId),
      this.deps.registry.metersOfDno(dnoId),
      this.minSize,
    );
    if (refusal) return { status: 'refused', requestId, ...refusal };
    const now = this.deps.clock.now();
    await this.deps.store.commit(() => this.deps.groups.define(dnoId, groups, now));
    return { status: 'accepted', requestId, message: `${groups.length} groups defined` };
  }

  private schedule(): void {
    const next = this.lastReleased + this.releaseMs; // start of the next interval to release
    const due = next + this.releaseMs + this.delayMs;
    this.timer = this.deps.clock.setTimeout(
      () => {
        this.releasing = this.releaseDue()
          .catch((err: Error) => {
            this.stats.failedRuns++;
            this.deps.log.error({ err: err.message }, 'release failed; retrying at the next interval');
          })
          .finally(() => {
            this.releasing = undefined;
            if (!this.stopped) this.schedule();
          });
      },
      Math.max(0, due - this.deps.clock.now()),
    );
  }

  /** The contribution bound in force, Wh per 30 minutes. */

  /** Releases every interval that is due, oldest first. */
  async releaseDue(): Promise<void> {
    for (;;) {
      const start = this.lastReleased + this.releaseMs;
      if (start + this.releaseMs + this.delayMs > this.deps.clock.now()) return;
      // One bound for every group of the interval: the one in force as its releases begin.
      const boundWh = intervalBoundWh(this.deps.contributionBoundWh(), this.releaseMs / 60_000);
      for (const group of this.groups()) await this.release(group, start, boundWh);
      this.lastReleased = start;
      await this.partials.prune(4 * this.releaseMs);
    }
  }

  /**
   * Releases one group's interval: alone when every member lives here, as the owner or a member of
   * a group spanning shards otherwise, not at all when no member lives here.
   */
  private async release(group: Group, start: number, boundWh: number): Promise<void> {
    const { cluster } = this.deps;
    const shards =
      cluster && [...new Set(group.meters.map((m) => cluster.shardOf(m) ?? cluster.shard))].sort();
    const spread = cluster && shards && !(shards.length === 1 && shards[0] === cluster.shard);
    const local = spread ? group.meters.filter((m) => cluster.shardOf(m) === cluster.shard) : group.meters;
    if (local.length === 0) return;
    const owner = spread ? shards[0]! : undefined;
    const key = { dnoId: group.dnoId, groupId: group.groupId, intervalStart: start };
    const partial = await this.charge(group, local, start, boundWh, spread ? 'partial' : 'released', (p) => {
      // The owner's own partial, kept with its charges: a restart after this still releases the group.
      if (owner && owner === cluster?.shard) this.partials.own(key, owner, p, shards!);
    });
    if (!partial) return;
    if (!spread) return this.publish(group, start, partial);
    if (owner !== cluster.shard) {
      await cluster.send(owner!, PARTIAL, { ...key, ...partial });
      return;
    }
    await this.partials.settle(key);
  }

  /** The owner's combined release of a group spanning shards: one noise sample on the sum. */
  private releaseCombined(key: PartialKey, got: Map<string, Partial>, late: string[]): void {
    const group = this.groups(key.dnoId).find((g) => g.groupId === key.groupId);
    if (!group) return; // groups are never deleted
    if (late.length > 0) {
      this.stats.lateShards += late.length;
      this.deps.log.warn(
        { groupId: group.groupId, late },
        'member shards late: released without their partials',
      );
    }
    this.publish(group, key.intervalStart, combinePartials([...got.values()])).catch((err: Error) => {
      this.stats.failedRuns++;
      this.deps.log.error({ err: err.message }, 'release of a group spanning shards failed');
    });
  }

  /**
   * Charges the budgets of the given members' contributions to one interval and records the
   * group's interval as done here, in one commit; undefined when it was done before.
   */
  private charge(
    group: Group,
    meters: readonly string[],
    start: number,
    boundWh: number,
    outcome: 'released' | 'partial',
    /** Runs inside the commit with the partial charged. */
    withPartial?: (partial: Partial) => void,
  ): Promise<Partial | undefined> {
    const { store, groups, budget, readings, registry } = this.deps;
    const minutes = this.releaseMs / 60_000;
    const [p, q] = this.epsilon;
    return store.commit((): Partial | undefined => {
      if (groups.released(group, start)) return undefined;
      const members = meters.map((meterId) => ({
        meterId,
        capacityWh: Math.floor(((registry.get(meterId)?.capacityW ?? 0) * minutes) / 60),
      }));
      const counted = contributions(
        members,
        readings.windowOf(meters, start, start + this.releaseMs),
        minutes,
        boundWh,
      );
      const charged = new Set(
        budget.charge(
          counted.included.map((c) => c.meterId),
          utcDay(start),
          Math.round((p * 1_000_000) / q),
        ),
      );
      const used = counted.included.filter((c) => charged.has(c.meterId));
      groups.recordRelease(group, start, outcome);
      this.stats.contributions += charged.size;
      this.stats.excluded += counted.excluded;
      this.stats.missing += counted.missing;
      this.stats.outOfBudget += counted.included.length - charged.size;
      for (const c of used)
        if (c.clippedWh > 0) {
          this.stats.clamped++;
          this.stats.clampedWh += c.clippedWh;
        }
      const partial = { totalWh: used.reduce((sum, c) => sum + c.wh, 0), deltaWh: counted.deltaWh };
      withPartial?.(partial);
      return partial;
    });
  }

  /** Adds one noise sample to the exact total and publishes it to the DNO. */
  private async publish(group: Group, start: number, exact: Partial): Promise<void> {
    const [p, q] = this.epsilon;
    const noised = aggregate(exact.totalWh, exact.deltaWh, this.epsilon, this.options.random);
    const message: Aggregate = {
      v: PROTOCOL_VERSION,
      groupId: group.groupId,
      intervalStart: new Date(start).toISOString(),
      intervalMinutes: (this.releaseMs / 60_000) as 15 | 30,
      noisyTotalWh: noised.noisyTotalWh,
      epsilon: `${p}/${q}`,
      noiseScaleWh: noised.noiseScaleWh,
      bound95Wh: noised.bound95Wh,
    };
    this.stats.released++;
    await this.deps.outbound.publish(topics.aggregate(group.dnoId, group.groupId), JSON.stringify(message));
  }

  /**
   * Another member shard's partial of a group this shard owns, kept before it is answered; a
   * repeat, or one after the group's interval was completed here, changes nothing.
   */
  private async receivePartial(from: string, body: unknown): Promise<void> {
    const partial = partialSchema.parse(body);
    const group = this.groups(partial.dnoId).find((g) => g.groupId === partial.groupId);
    const cluster = this.deps.cluster!;
    if (!group?.meters.some((m) => cluster.shardOf(m) === from)) {
      this.deps.log.warn({ from }, 'partial for a group without members in its shard refused');
      return;
    }
    const { dnoId, groupId, intervalStart, totalWh, deltaWh } = partial;
    const key = { dnoId, groupId, intervalStart };
    const stored = await this.deps.store.commit(() => {
      // Released here and no longer waited for: completed (this one was late, or is a repeat).
      if (!this.partials.waiting(key) && this.deps.groups.released(group, intervalStart)) return false;
      return this.partials.add(key, from, { totalWh, deltaWh });
    });
    if (stored) await this.partials.settle(key);
  }

  /** Fractions of today's budget spent by the given households (dashboard). */
  budgetSpent(meterIds: string[]): number[] {
    return this.deps.budget.distribution(utcDay(this.deps.clock.now()), meterIds);
  }

  /** No further releases; resolves when the one running (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.deps.clock.clearTimeout(this.timer);
    await this.releasing;
    this.partials.clear();
  }
}
