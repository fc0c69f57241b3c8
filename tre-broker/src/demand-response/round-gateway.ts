/**
 * The gateway of a DR round that spans shards (issue 21). The gateway is the shard the event's
 * DSM is connected to (recorded with the event, dr-book.ts `gatewayOf`).
 *  - bids: at the deadline every shard shuffles its live bids and sends them as one batch, which
 *    may be empty (`dr.batch`: pseudonym, quantity and price only). The gateway waits for a batch
 *    from every shard that holds households, or for `shardGraceMs` after its own deadline. Then it
 *    shuffles the union once and publishes it to the DSM in the shape a single TRE uses. A batch
 *    that comes after that is refused and its shard told (`dr.late`), so that shard's bids lapse;
 *    the late shards are logged by name.
 *  - acceptance: the DSM's signed acceptance, checked at the gateway against the union, goes to
 *    every shard that sent bids (`dr.acceptance`, with the DSM's certificate key). Each shard
 *    verifies the signature itself, credits its own accepted bids and tells all its bidders,
 *    accepted or not. A repeat is sent again; each shard applies it once.
 *  - compliance: each shard settles its own bids and sends its per-pseudonym results
 *    (`dr.compliance`). The gateway publishes one report once the gateway and every shard holding
 *    an accepted bid have reported, or once `shardGraceMs` has passed after the compliance grace.
 *    The results of late shards are left out and logged by shard name.
 * For the round, the gateway keeps pseudonym -> shard, never the household. The DSM learns
 * neither the shard nor the household: it gets one shuffled message per stage, as from one TRE.
 *
 * The round state is in memory only. If the gateway restarts between its deadline and the
 * release, the round is lost: later batches are refused as late, the DSM gets no bids message and
 * every bid lapses. If it restarts after the acceptance, the compliance report is lost; the credits
 * and reversals in the shards' ledgers stand. Both cases are privacy-safe: nothing is released
 * twice or in part.
 */
import {
  type Clock,
  complianceSchema,
  PendingTimers,
  PROTOCOL_VERSION,
  pseudoBidsSchema,
  topics,
} from '@tre/protocol';
import { z } from 'zod';
import type { Outbound } from '../broker/message-router.js';
import type { ShardCluster } from '../cluster/shard-cluster.js';
import type { Logger } from '../log.js';
import type { DrBook, StoredEvent } from './dr-book.js';
import { shuffled } from './pseudonyms.js';

export const BATCH = 'dr.batch';
export const ACCEPTANCE = 'dr.acceptance';
export const COMPLIANCE = 'dr.compliance';
export const LATE = 'dr.late';

/** A round is an event's revision: a modification starts a new round with fresh pseudonyms. */
const roundFields = { eventId: z.string().min(1).max(128), revision: z.number().int().min(0) };

/** A shard -> the gateway: its live bids of a round, shuffled. */
export const batchSchema = z.strictObject({ ...roundFields, bids: pseudoBidsSchema.shape.bids });
/** The gateway -> a shard that sent bids: the DSM's signed acceptance and its certificate key (SPKI DER, base64). */
export const forwardedAcceptanceSchema = z.strictObject({
  ...roundFields,
  jws: z.string().min(1),
  dsmKey: z.string().min(1).max(1024),
});
/** A shard -> the gateway: the settled results of its accepted bids, shuffled. */
export const complianceBatchSchema = z.strictObject({
  ...roundFields,
  results: complianceSchema.shape.results,
});
/** The gateway -> a shard: its batch came too late (or not at all), so its bids lapse. */
export const lateSchema = z.strictObject(roundFields);

export type PseudoBid = z.infer<typeof batchSchema>['bids'][number];
type Result = z.infer<typeof complianceBatchSchema>['results'][number];
type RoundId = z.infer<typeof lateSchema>;

/** What the gateway collects from the shards for one stage of a round. */
interface Collecting<T> {
  received: Map<string, T>;
  /** The shards waited for; set when the stage opens here. */
  expected?: readonly string[];
  cancel?: () => void;
  done: boolean;
}

interface Round extends RoundId {
  dsmId?: string;
  batches: Collecting<PseudoBid[]>;
  /** Set at the release: the shard of each released pseudonym, and the shards whose batch was taken. */
  shardOf?: Map<string, string>;
  took?: ReadonlySet<string>;
  reports?: Collecting<Result[]>;
}

export interface RoundGatewayDeps {
  cluster: ShardCluster;
  clock: Clock;
  outbound: Outbound;
  log: Logger;
  dr: Pick<DrBook, 'event' | 'gatewayOf'>;
}

export interface RoundGatewayOptions {
  /** How long to wait for late shards, after this gateway's own deadline and after its compliance grace. */
  shardGraceMs: number;
  /** The shards settle this long after the window (the DR service's `complianceGraceMs`). */
  complianceGraceMs: number;
}

const keyOf = (r: RoundId) => `${r.eventId}#${r.revision}`;

export class RoundGateway {
  private readonly rounds = new Map<string, Round>();
  private readonly timers: PendingTimers;
  /** Totals for the operator: rounds released, shards late (bids or compliance), late batches refused, reports. */
  readonly stats = { released: 0, lateShards: 0, refusedBatches: 0, reports: 0 };

  constructor(
    private readonly deps: RoundGatewayDeps,
    private readonly options: RoundGatewayOptions,
  ) {
    this.timers = new PendingTimers(deps.clock);
  }

  start(): void {
    const { cluster } = this.deps;
    cluster.on(BATCH, (from, body) => this.receiveBatch(from, batchSchema.parse(body)));
    cluster.on(COMPLIANCE, async (from, body) => this.receiveReport(from, complianceBatchSchema.parse(body)));
  }

  /**
   * This shard is the event's gateway and its deadline has passed: wait for every shard's batch
   * from now on. Called before this shard commits its own release, so that no batch arriving
   * during that commit is taken for a late one.
   */
  open(event: StoredEvent): void {
    const r = this.round(event);
    if (r.batches.expected) return;
    r.dsmId = event.dsmId;
    r.batches.expected = this.deps.cluster.shardsWithHouseholds();
    r.batches.cancel = this.timers.after(this.options.shardGraceMs, () => this.release(r));
    // Nothing is accepted after acceptBy: forget a round the DSM did not accept by then.
    this.timers.after(Math.max(0, Date.parse(event.acceptBy) - this.deps.clock.now()), () => {
      if (!r.reports && this.rounds.get(keyOf(r)) === r) this.forget(r);
    });
    this.checkBatches(r);
  }

  /** The shard of each pseudonym of a released round; undefined before its release, or once it is gone. */
  released(round: RoundId): ReadonlyMap<string, string> | undefined {
    return this.rounds.get(keyOf(round))?.shardOf;
  }

  /**
   * Sends the DSM's signed acceptance of a released round to every shard that sent bids, and
   * waits for their compliance results. A repeat sends it again (each shard applies it once).
   */
  async forward(event: StoredEvent, jws: string, dsmKey: string, accepted: readonly string[]): Promise<void> {
    const r = this.rounds.get(keyOf(event));
    if (!r?.shardOf) return;
    if (!r.reports) {
      const holding = new Set(accepted.map((p) => r.shardOf!.get(p)!));
      // The gateway settles every accepted round, so its own (possibly empty) report always comes.
      holding.add(this.deps.cluster.shard);
      const due = Date.parse(event.windowEnd) + this.options.complianceGraceMs + this.options.shardGraceMs;
      const reports: Collecting<Result[]> = {
        received: new Map(),
        expected: [...holding].sort(),
        done: false,
      };
      reports.cancel = this.timers.after(Math.max(0, due - this.deps.clock.now()), () => this.report(r));
      r.reports = reports;
    }
    // Every shard that sent bids, accepted or not: each tells all its bidders their outcome.
    const senders = [...new Set(r.shardOf.values())];
    const body = { eventId: r.eventId, revision: r.revision, jws, dsmKey };
    await Promise.all(senders.map((s) => this.deps.cluster.send(s, ACCEPTANCE, body)));
  }

  /** The event was cancelled or modified: its rounds here end without anything more to the DSM. */
  drop(eventId: string, revision?: number): void {
    for (const r of [...this.rounds.values()])
      if (r.eventId === eventId && (revision === undefined || r.revision === revision)) this.forget(r);
  }

  stop(): void {
    this.timers.clear();
    this.rounds.clear();
  }

  private round(id: RoundId): Round {
    const key = keyOf(id);
    let r = this.rounds.get(key);
    if (!r) {
      r = { eventId: id.eventId, revision: id.revision, batches: { received: new Map(), done: false } };
      this.rounds.set(key, r);
    }
    return r;
  }

  private forget(r: Round): void {
    r.batches.cancel?.();
    r.reports?.cancel?.();
    this.rounds.delete(keyOf(r));
  }

  private async receiveBatch(from: string, batch: z.infer<typeof batchSchema>): Promise<void> {
    const r = this.rounds.get(keyOf(batch)) ?? this.early(batch);
    if (r && !r.batches.done) {
      if (!r.batches.received.has(from)) r.batches.received.set(from, batch.bids);
      this.checkBatches(r);
      return;
    }
    if (r?.took?.has(from)) return; // a repeat of a batch taken
    this.stats.refusedBatches++;
    this.deps.log.warn({ from }, 'a bid batch after the release refused: its bids lapse');
    await this.deps.cluster.send(from, LATE, { eventId: batch.eventId, revision: batch.revision });
  }

  /**
   * The round of a batch that came before this gateway's own deadline (shards' clocks differ), if
   * the batch belongs to a round this gateway will open.
   */
  private early({ eventId, revision }: RoundId): Round | undefined {
    const { dr, cluster } = this.deps;
    const event = dr.event(eventId);
    if (event?.stage !== 'open' || event.revision !== revision || dr.gatewayOf(eventId) !== cluster.shard)
      return undefined;
    return this.round({ eventId, revision });
  }

  private checkBatches(r: Round): void {
    const { expected, received } = r.batches;
    if (expected?.every((s) => received.has(s))) this.release(r);
  }

  /** The union of the batches that came, shuffled once, to the DSM; the late shards are told. */
  private release(r: Round): void {
    const { batches } = r;
    if (batches.done) return;
    batches.done = true;
    batches.cancel?.();
    const late = (batches.expected ?? []).filter((s) => !batches.received.has(s));
    const union: PseudoBid[] = [];
    r.shardOf = new Map();
    for (const [shard, bids] of batches.received)
      for (const b of bids) {
        r.shardOf.set(b.pseudonym, shard);
        union.push(b);
      }
    r.took = new Set(batches.received.keys());
    batches.received.clear();
    this.stats.released++;
    this.run(async () => {
      const body = { v: PROTOCOL_VERSION, eventId: r.eventId, bids: shuffled(union) };
      await this.deps.outbound.publish(topics.pseudoBids(r.dsmId!, r.eventId), JSON.stringify(body));
      if (late.length === 0) return;
      this.stats.lateShards += late.length;
      this.deps.log.warn({ late }, 'shards late with their bids: released without them, their bids lapse');
      const id = { eventId: r.eventId, revision: r.revision };
      await Promise.all(late.map((s) => this.deps.cluster.send(s, LATE, id)));
    });
  }

  private receiveReport(from: string, report: z.infer<typeof complianceBatchSchema>): void {
    const r = this.rounds.get(keyOf(report));
    const reports = r?.reports;
    if (!r || !reports || reports.done || reports.received.has(from)) {
      if (report.results.length > 0)
        this.deps.log.warn({ from }, 'compliance results for no open report refused');
      return;
    }
    if (!report.results.every((x) => r.shardOf!.get(x.pseudonym) === from)) {
      this.deps.log.warn({ from }, "compliance results naming another shard's pseudonyms refused");
      return;
    }
    reports.received.set(from, report.results);
    if (reports.expected!.every((s) => reports.received.has(s))) this.report(r);
  }

  /** One compliance report of the results that came, shuffled; the round ends here. */
  private report(r: Round): void {
    const reports = r.reports!;
    if (reports.done) return;
    reports.done = true;
    this.forget(r);
    const late = reports.expected!.filter((s) => !reports.received.has(s));
    if (late.length > 0) {
      this.stats.lateShards += late.length;
      this.deps.log.warn({ late }, 'shards late with compliance: reported without their results');
    }
    const body = {
      v: PROTOCOL_VERSION,
      eventId: r.eventId,
      results: shuffled([...reports.received.values()].flat()),
    };
    this.stats.reports++;
    this.run(() => this.deps.outbound.publish(topics.compliance(r.dsmId!, r.eventId), JSON.stringify(body)));
  }

  private run(fn: () => Promise<void>): void {
    fn().catch((err: Error) =>
      this.deps.log.error({ err: err.message }, 'demand-response gateway step failed'),
    );
  }
}
