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
import { type HandlerResult, type InboundMessage, refusalOf } from '../broker/message-router.js';
import type { FlowBase } from '../flow-base.js';
import type { ReadingStore } from '../ingest/reading-store.js';
import { aggregate, contributions, intervalBoundWh } from './aggregate.js';
import type { RandomSource } from './discrete-laplace.js';
import type { Group, GroupBook } from './group-book.js';
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
}

export interface MonitoringDeps
  extends Pick<FlowBase, 'store' | 'registry' | 'router' | 'outbound' | 'clock' | 'log'> {
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
  };

  constructor(
    private readonly deps: MonitoringDeps,
    private readonly options: MonitoringOptions = {},
  ) {
    this.minSize = Math.max(2, options.minGroupSize ?? DEFAULT_MIN_GROUP_SIZE);
    this.epsilon = options.epsilon ?? [1, 1];
    this.releaseMs = (options.releaseMinutes ?? 30) * 60_000;
    this.delayMs = options.releaseDelayMs ?? 5 * 60_000;
  }

  start(): void {
    // Release what ends from now on; what ended before this start was either released or is history.
    this.lastReleased =
      Math.floor((this.deps.clock.now() - this.delayMs - this.releaseMs) / this.releaseMs) * this.releaseMs;
    this.deps.router.on('groups', (msg) => this.handleGroups(msg));
    this.schedule();
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
    }
  }

  private async release(group: Group, start: number, boundWh: number): Promise<void> {
    const { store, groups, budget, readings, registry } = this.deps;
    const minutes = this.releaseMs / 60_000;
    const [p, q] = this.epsilon;
    const message = await store.commit((): Aggregate | undefined => {
      if (groups.released(group, start)) return undefined;
      const members = group.meters.map((meterId) => ({
        meterId,
        capacityWh: Math.floor(((registry.get(meterId)?.capacityW ?? 0) * minutes) / 60),
      }));
      const counted = contributions(
        members,
        readings.windowOf(group.meters, start, start + this.releaseMs),
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
      const totalWh = used.reduce((sum, c) => sum + c.wh, 0);
      const noised = aggregate(totalWh, counted.deltaWh, this.epsilon, this.options.random);
      groups.recordRelease(group, start, 'released');
      this.stats.contributions += charged.size;
      this.stats.excluded += counted.excluded;
      this.stats.missing += counted.missing;
      this.stats.outOfBudget += counted.included.length - charged.size;
      for (const c of used)
        if (c.clippedWh > 0) {
          this.stats.clamped++;
          this.stats.clampedWh += c.clippedWh;
        }
      return {
        v: PROTOCOL_VERSION,
        groupId: group.groupId,
        intervalStart: new Date(start).toISOString(),
        intervalMinutes: minutes as 15 | 30,
        noisyTotalWh: noised.noisyTotalWh,
        epsilon: `${p}/${q}`,
        noiseScaleWh: noised.noiseScaleWh,
        bound95Wh: noised.bound95Wh,
      };
    });
    if (!message) return;
    this.stats.released++;
    await this.deps.outbound.publish(topics.aggregate(group.dnoId, group.groupId), JSON.stringify(message));
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
  }
}
