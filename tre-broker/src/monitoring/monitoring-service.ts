/**
 * The monitoring flow (paper III-A) in the TRE: DNO group definitions, and per group and release
 * interval one noisy total to the DNO, charged to each included household's daily budget.
 *
 * Release: each `releaseMinutes` interval (default 30) is released `releaseDelayMs` (default 5 min)
 * after it ends. A household's contribution is the sum of its in-bounds readings in the interval
 * when they cover all of it; with any reading excluded by the bounds check it counts as excluded,
 * with readings missing as missing (both reported as counts only). Each contribution is clamped to
 * [0, capacity x interval]; the sensitivity Delta is the largest such bound in the group, and the
 * total gets discrete Laplace noise of scale Delta/epsilon. Each (group, interval) is released at
 * most once, recorded durably, so a restart never releases twice.
 */

import type { TimerHandle } from '@tre/protocol';
import {
  type Aggregate,
  decodePayload,
  groupsRequestSchema,
  MAX_BULK_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  topics,
  type WithheldAggregate,
} from '@tre/protocol';
import { type HandlerResult, type InboundMessage, refusalOf } from '../broker/message-router.js';
import type { TreContext } from '../tre.js';
import { noiseBound, type RandomSource, sampleDiscreteLaplace } from './discrete-laplace.js';
import { checkGroups, DEFAULT_MIN_GROUP_SIZE } from './group-rules.js';
import { PrivacyBudget, toMicro, utcDay } from './privacy-budget.js';

export interface MonitoringOptions {
  minGroupSize?: number;
  /** Epsilon of one release as a fraction [p, q] = p/q (default 1/1). */
  epsilon?: [number, number];
  /** Per household per UTC day (default 100). */
  dailyBudget?: number;
  releaseMinutes?: 15 | 30;
  releaseDelayMs?: number;
  random?: RandomSource;
}

interface Group {
  dnoId: string;
  groupId: string;
  meters: string[];
}

export class MonitoringService {
  private readonly budget: PrivacyBudget;
  private readonly minSize: number;
  private readonly epsilon: [number, number];
  private readonly releaseMs: number;
  private readonly delayMs: number;
  private timer: TimerHandle | undefined;
  private lastReleased: number;
  readonly stats = { released: 0, withheld: 0 };

  constructor(
    private readonly ctx: TreContext,
    private readonly options: MonitoringOptions = {},
  ) {
    this.minSize = Math.max(2, options.minGroupSize ?? DEFAULT_MIN_GROUP_SIZE);
    this.epsilon = options.epsilon ?? [1, 1];
    this.releaseMs = (options.releaseMinutes ?? 30) * 60_000;
    this.delayMs = options.releaseDelayMs ?? 5 * 60_000;
    ctx.store.migrate(
      'monitoring-1',
      `CREATE TABLE dno_groups (dno_id TEXT NOT NULL, group_id TEXT NOT NULL, members TEXT NOT NULL, defined_at INTEGER NOT NULL,
         PRIMARY KEY (dno_id, group_id));
       CREATE TABLE releases (dno_id TEXT NOT NULL, group_id TEXT NOT NULL, interval_start INTEGER NOT NULL, outcome TEXT NOT NULL,
         PRIMARY KEY (dno_id, group_id, interval_start));
       ${PrivacyBudget.schema}`,
    );
    this.budget = new PrivacyBudget(ctx.store.db, toMicro(options.dailyBudget ?? 100));
    // Release what ends from now on; what ended before this start was either released or is history.
    this.lastReleased =
      Math.floor((ctx.clock.now() - this.delayMs - this.releaseMs) / this.releaseMs) * this.releaseMs;
    ctx.router.on('groups', (msg) => this.handleGroups(msg));
    this.schedule();
  }

  get dailyBudgetMicro(): number {
    return this.budget.dailyMicro;
  }

  groups(dnoId?: string): Group[] {
    const rows = (
      dnoId
        ? this.ctx.store.db
            .prepare('SELECT dno_id, group_id, members FROM dno_groups WHERE dno_id = ? ORDER BY group_id')
            .all(dnoId)
        : this.ctx.store.db
            .prepare('SELECT dno_id, group_id, members FROM dno_groups ORDER BY dno_id, group_id')
            .all()
    ) as { dno_id: string; group_id: string; members: string }[];
    return rows.map((r) => ({
      dnoId: r.dno_id,
      groupId: r.group_id,
      meters: JSON.parse(r.members) as string[],
    }));
  }

  private async handleGroups(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, groupsRequestSchema, MAX_BULK_PAYLOAD_BYTES);
    if (!decoded.ok) return refusalOf(decoded);
    const { requestId, groups } = decoded.value;
    const dnoId = msg.from.id;
    const refusal = checkGroups(
      groups,
      this.groups(dnoId),
      this.ctx.registry.metersOfDno(dnoId),
      this.minSize,
    );
    if (refusal) return { status: 'refused', requestId, ...refusal };
    const now = this.ctx.clock.now();
    await this.ctx.store.commit((db) => {
      const insert = db.prepare(
        'INSERT INTO dno_groups (dno_id, group_id, members, defined_at) VALUES (?, ?, ?, ?)',
      );
      for (const g of groups) insert.run(dnoId, g.groupId, JSON.stringify(g.meters), now);
    });
    return { status: 'accepted', requestId, message: `${groups.length} groups defined` };
  }

  private schedule(): void {
    const next = this.lastReleased + this.releaseMs; // start of the next interval to release
    const due = next + this.releaseMs + this.delayMs;
    this.timer = this.ctx.clock.setTimeout(
      () => {
        this.releaseDue().then(
          () => this.schedule(),
          (err: Error) => {
            this.ctx.log.error({ err: err.message }, 'release failed; retrying at the next interval');
            this.schedule();
          },
        );
      },
      Math.max(0, due - this.ctx.clock.now()),
    );
  }

  /** Releases every interval that is due, oldest first. */
  async releaseDue(): Promise<void> {
    for (;;) {
      const start = this.lastReleased + this.releaseMs;
      if (start + this.releaseMs + this.delayMs > this.ctx.clock.now()) return;
      for (const group of this.groups()) await this.release(group, start);
      this.lastReleased = start;
    }
  }

  private async release(group: Group, start: number): Promise<void> {
    const end = start + this.releaseMs;
    const minutes = this.releaseMs / 60_000;
    const [p, q] = this.epsilon;
    const message = await this.ctx.store.commit((db): Aggregate | WithheldAggregate | undefined => {
      if (
        db
          .prepare('SELECT 1 FROM releases WHERE dno_id = ? AND group_id = ? AND interval_start = ?')
          .get(group.dnoId, group.groupId, start)
      )
        return undefined;
      const rows = db
        .prepare(
          `SELECT r.meter_id, sum(CASE WHEN r.status = 'ok' THEN r.effective_wh ELSE 0 END) AS wh,
                  sum(r.interval_minutes) AS covered, sum(r.status = 'excluded') AS excluded
           FROM readings r JOIN json_each(?) m ON m.value = r.meter_id
           WHERE r.interval_start >= ? AND r.interval_start < ? GROUP BY r.meter_id`,
        )
        .all(JSON.stringify(group.meters), start, end) as {
        meter_id: string;
        wh: number;
        covered: number;
        excluded: number;
      }[];
      const byMeter = new Map(rows.map((r) => [r.meter_id, r]));
      let total = 0;
      let delta = 1;
      const included: string[] = [];
      let excluded = 0;
      for (const meterId of group.meters) {
        const household = this.ctx.registry.get(meterId);
        const bound = Math.floor(((household?.capacityW ?? 0) * minutes) / 60);
        delta = Math.max(delta, bound);
        const r = byMeter.get(meterId);
        if (!r) continue;
        if (r.excluded > 0) excluded++;
        else if (r.covered >= minutes) {
          included.push(meterId);
          total += Math.min(Math.max(r.wh, 0), bound);
        }
      }
      const base = {
        v: PROTOCOL_VERSION,
        groupId: group.groupId,
        intervalStart: new Date(start).toISOString(),
        intervalMinutes: minutes as 15 | 30,
      };
      let outcome: Aggregate | WithheldAggregate;
      if (included.length === 0) {
        outcome = { ...base, withheld: 'NO_READINGS', households: 0 };
      } else {
        const charge = this.budget.charge(included, utcDay(start), Math.round((p * 1_000_000) / q));
        if (!charge.charged) outcome = { ...base, withheld: 'PRIVACY_BUDGET', households: charge.blocked };
        else {
          const scale = (delta * q) / p;
          outcome = {
            ...base,
            noisyTotalWh: total + sampleDiscreteLaplace(delta * q, p, this.options.random),
            included: included.length,
            excluded,
            missing: group.meters.length - included.length - excluded,
            epsilon: `${p}/${q}`,
            noiseScaleWh: scale,
            bound95Wh: noiseBound(scale, 0.05),
          };
        }
      }
      db.prepare('INSERT INTO releases (dno_id, group_id, interval_start, outcome) VALUES (?, ?, ?, ?)').run(
        group.dnoId,
        group.groupId,
        start,
        'withheld' in outcome ? outcome.withheld : 'released',
      );
      return outcome;
    });
    if (!message) return;
    if ('withheld' in message) this.stats.withheld++;
    else this.stats.released++;
    await this.ctx.outbound.publish(topics.aggregate(group.dnoId, group.groupId), JSON.stringify(message));
  }

  /** Fractions of today's budget spent by the given households (dashboard). */
  budgetSpent(meterIds: string[]): number[] {
    return this.budget.distribution(utcDay(this.ctx.clock.now()), meterIds);
  }

  stop(): void {
    if (this.timer) this.ctx.clock.clearTimeout(this.timer);
  }
}
