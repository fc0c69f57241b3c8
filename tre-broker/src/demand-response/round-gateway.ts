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
 * The round is kept in the shard's store, journaled like every table, so a restart or a failover
 * to the shard's standby resumes it (`start` re-arms its steps at their stored times, with the
 * clock): `dr_gateway_rounds` (the shards waited for and when each step is due, whether the union
 * went out, which shards reported), `dr_gateway_batches` (the shards whose batch was taken, early
 * ones included) and `dr_gateway_bids` (each batch's bids: pseudonym, shard, quantity, price, and
 * its compliance result once reported). Pseudonyms and shard names only, never a household. A batch,
 * or a shard's report, stored once is a repeat when it comes again (by round and shard). Each step
 * is decided in the transaction that records it done, so it happens once, whichever TRE runs it:
 * the union at most once (marked released as it is read), the report at most once (the round's
 * rows are deleted as it is read). The rows go with the report, or at `acceptBy` when the DSM did
 * not accept, or when the event is changed (at `start` too, for a change made before a restart).
 * A step whose publish is cut short by the restart itself is not done again: privacy-safe,
 * nothing is released twice or in part.
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
import type { Store } from '../store/store.js';
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
type RoundId = z.infer<typeof lateSchema>;

const SCHEMA = `CREATE TABLE dr_gateway_rounds (event_id TEXT NOT NULL, revision INTEGER NOT NULL, dsm_id TEXT NOT NULL,
    expected TEXT NOT NULL, release_at INTEGER NOT NULL, accept_by INTEGER NOT NULL, released INTEGER NOT NULL DEFAULT 0,
    reporters TEXT, report_at INTEGER, reported TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (event_id, revision));
  CREATE TABLE dr_gateway_batches (event_id TEXT NOT NULL, revision INTEGER NOT NULL, shard TEXT NOT NULL,
    PRIMARY KEY (event_id, revision, shard));
  CREATE TABLE dr_gateway_bids (event_id TEXT NOT NULL, revision INTEGER NOT NULL, pseudonym TEXT NOT NULL, shard TEXT NOT NULL,
    quantity_wh INTEGER NOT NULL, price INTEGER NOT NULL, delivered INTEGER, PRIMARY KEY (event_id, revision, pseudonym));`;

/** A round as kept (JSON arrays of shard names; times in ms). */
interface RoundRow {
  dsm_id: string;
  /** The shards whose batch is waited for. */
  expected: string;
  /** When the union goes out without the shards still missing. */
  release_at: number;
  /** When a round the DSM has not accepted is forgotten. */
  accept_by: number;
  released: number;
  /** The shards whose compliance is waited for; set when the acceptance is recorded. */
  reporters: string | null;
  /** When the report goes out without the shards still missing. */
  report_at: number | null;
  /** The shards that reported. */
  reported: string;
}

/** Creates the gateway's tables (once); in every TRE, so a standby can replay them before it is a shard. */
export function migrateRoundGateway(store: Store): void {
  store.migrate('dr-gateway-1', SCHEMA);
}

export interface RoundGatewayDeps {
  cluster: ShardCluster;
  clock: Clock;
  store: Store;
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

type Step = 'release' | 'forget' | 'report';
const keyOf = (r: RoundId) => `${r.eventId}#${r.revision}`;
const shardsIn = (json: string | null) => (json ? (JSON.parse(json) as string[]) : []);

export class RoundGateway {
  private readonly timers: PendingTimers;
  /** The armed step timers, by round and step: each is armed once and cancelled when it is moot. */
  private readonly armed = new Map<string, () => void>();
  /** Totals for the operator: rounds released, shards late (bids or compliance), late batches refused, reports. */
  readonly stats = { released: 0, lateShards: 0, refusedBatches: 0, reports: 0 };

  constructor(
    private readonly deps: RoundGatewayDeps,
    private readonly options: RoundGatewayOptions,
  ) {
    migrateRoundGateway(deps.store);
    this.timers = new PendingTimers(deps.clock);
  }

  /** Registers the handlers and resumes the rounds kept (after a restart or a takeover). */
  start(): void {
    const { cluster } = this.deps;
    cluster.on(BATCH, (from, body) => this.receiveBatch(from, batchSchema.parse(body)));
    cluster.on(COMPLIANCE, (from, body) => this.receiveReport(from, complianceBatchSchema.parse(body)));
    this.resume();
  }

  /**
   * This shard is the event's gateway and its deadline has passed: wait for every shard's batch
   * from now on. Awaited before this shard commits its own release, so that no batch arriving
   * during that commit is taken for a late one. Again for the same round: nothing changes.
   */
  async open(event: StoredEvent): Promise<void> {
    const { store, cluster, clock } = this.deps;
    const id = { eventId: event.eventId, revision: event.revision };
    const row = await store.commit(() => {
      store
        .statement(
          `INSERT OR IGNORE INTO dr_gateway_rounds (event_id, revision, dsm_id, expected, release_at, accept_by)
           VALUES (?, ?, ?, ?, ?, ?)`,
        )
        .run(
          id.eventId,
          id.revision,
          event.dsmId,
          JSON.stringify(cluster.shardsWithHouseholds()),
          clock.now() + this.options.shardGraceMs,
          Date.parse(event.acceptBy),
        );
      return this.row(id);
    });
    if (row) this.arm(id, row);
    await this.release(id, false);
  }

  /** The shard of each pseudonym of a released round; undefined before its release, or once it is gone. */
  released(round: RoundId): ReadonlyMap<string, string> | undefined {
    if (!this.row(round)?.released) return undefined;
    const rows = this.deps.store
      .statement('SELECT pseudonym, shard FROM dr_gateway_bids WHERE event_id = ? AND revision = ?')
      .all(round.eventId, round.revision) as { pseudonym: string; shard: string }[];
    return new Map(rows.map((r) => [r.pseudonym, r.shard]));
  }

  /**
   * The DSM's acceptance of a released round is being recorded: from now on the compliance
   * results of the gateway and of every shard holding an accepted bid are waited for. Inside the
   * commit that records the acceptance; again for the same round: nothing changes.
   */
  expectReports(event: StoredEvent, accepted: readonly string[]): void {
    const { store, cluster } = this.deps;
    const r = this.row(event);
    if (!r?.released || r.reporters !== null) return;
    const shardOf = store.statement(
      'SELECT shard FROM dr_gateway_bids WHERE event_id = ? AND revision = ? AND pseudonym = ?',
    );
    const holding = new Set<string>();
    for (const p of accepted) {
      const s = shardOf.get(event.eventId, event.revision, p) as { shard: string } | undefined;
      if (s) holding.add(s.shard);
    }
    // The gateway settles every accepted round, so its own (possibly empty) report always comes.
    holding.add(cluster.shard);
    const due = Date.parse(event.windowEnd) + this.options.complianceGraceMs + this.options.shardGraceMs;
    store
      .statement(
        'UPDATE dr_gateway_rounds SET reporters = ?, report_at = ? WHERE event_id = ? AND revision = ? AND reporters IS NULL',
      )
      .run(JSON.stringify([...holding].sort()), due, event.eventId, event.revision);
  }

  /**
   * Sends the DSM's signed acceptance of a released round to every shard that sent bids, and
   * waits for their compliance results (`expectReports` was called with its recording). A repeat
   * sends it again (each shard applies it once).
   */
  async forward(event: StoredEvent, jws: string, dsmKey: string): Promise<void> {
    const { store, cluster } = this.deps;
    const id = { eventId: event.eventId, revision: event.revision };
    const row = this.row(id);
    if (!row?.released) return;
    this.arm(id, row);
    // Every shard that sent bids, accepted or not: each tells all its bidders their outcome.
    const senders = (
      store
        .statement('SELECT DISTINCT shard FROM dr_gateway_bids WHERE event_id = ? AND revision = ?')
        .all(id.eventId, id.revision) as { shard: string }[]
    ).map((s) => s.shard);
    const body = { ...id, jws, dsmKey };
    await Promise.all(senders.map((s) => cluster.send(s, ACCEPTANCE, body)));
  }

  /**
   * The event was cancelled or modified: its rounds here end without anything more to the DSM
   * (`revision`: that round; otherwise every round but that of the event's current terms, if any).
   */
  drop(eventId: string, revision?: number): void {
    this.run(async () => {
      const gone = await this.deps.store.commit(() => {
        const event = this.deps.dr.event(eventId);
        const keep = revision === undefined && event?.stage !== 'cancelled' ? event?.revision : undefined;
        const revisions = (
          this.deps.store
            .statement(
              `SELECT revision FROM dr_gateway_rounds WHERE event_id = ?
               UNION SELECT revision FROM dr_gateway_batches WHERE event_id = ?`,
            )
            .all(eventId, eventId) as { revision: number }[]
        )
          .map((r) => r.revision)
          .filter((r) => (revision === undefined ? r !== keep : r === revision));
        for (const r of revisions) this.deleteRound({ eventId, revision: r });
        return revisions;
      });
      for (const r of gone) this.disarm({ eventId, revision: r });
    });
  }

  stop(): void {
    this.timers.clear();
    this.armed.clear();
  }

  /**
   * The rounds kept: their steps armed at their stored times (at once, as `start` returns); a step
   * whose shards are all in is done now. Rounds of events changed meanwhile go.
   */
  private resume(): void {
    const { store, dr } = this.deps;
    const ids = store
      .statement(
        `SELECT event_id AS eventId, revision FROM dr_gateway_rounds
         UNION SELECT event_id AS eventId, revision FROM dr_gateway_batches`,
      )
      .all() as RoundId[];
    const stale: RoundId[] = [];
    for (const id of ids) {
      const event = dr.event(id.eventId);
      if (event?.revision !== id.revision || event.stage === 'cancelled') {
        stale.push(id);
        continue;
      }
      const row = this.row(id);
      if (!row) continue; // early batches only: the round opens at this gateway's deadline
      this.arm(id, row);
      this.run(async () => {
        await this.release(id, false);
        await this.report(id, false);
      });
    }
    if (stale.length > 0)
      this.run(async () => {
        await store.commit(() => {
          for (const id of stale) this.deleteRound(id);
        });
      });
  }

  /** Arms the round's due steps (each once): its release, forgetting it unaccepted, its report. */
  private arm(id: RoundId, r: RoundRow): void {
    if (!r.released) this.after(id, 'release', r.release_at, () => this.release(id, true));
    if (r.reporters === null) this.after(id, 'forget', r.accept_by, () => this.forget(id));
    else {
      this.disarm(id, ['forget']);
      this.after(id, 'report', r.report_at!, () => this.report(id, true));
    }
  }

  private after(id: RoundId, step: Step, at: number, fn: () => Promise<void>): void {
    const key = `${keyOf(id)}/${step}`;
    if (this.armed.has(key)) return;
    const cancel = this.timers.after(Math.max(0, at - this.deps.clock.now()), () => {
      this.armed.delete(key);
      this.run(fn);
    });
    this.armed.set(key, cancel);
  }

  private disarm(id: RoundId, steps: readonly Step[] = ['release', 'forget', 'report']): void {
    for (const step of steps) {
      const key = `${keyOf(id)}/${step}`;
      this.armed.get(key)?.();
      this.armed.delete(key);
    }
  }

  private row(id: RoundId): RoundRow | undefined {
    return this.deps.store
      .statement(
        `SELECT dsm_id, expected, release_at, accept_by, released, reporters, report_at, reported
         FROM dr_gateway_rounds WHERE event_id = ? AND revision = ?`,
      )
      .get(id.eventId, id.revision) as RoundRow | undefined;
  }

  private batchShards(id: RoundId): Set<string> {
    const rows = this.deps.store
      .statement('SELECT shard FROM dr_gateway_batches WHERE event_id = ? AND revision = ?')
      .all(id.eventId, id.revision) as { shard: string }[];
    return new Set(rows.map((r) => r.shard));
  }

  /** Inside a commit. */
  private deleteRound(id: RoundId): void {
    for (const table of ['dr_gateway_bids', 'dr_gateway_batches', 'dr_gateway_rounds'] as const)
      this.deps.store
        .statement(`DELETE FROM ${table} WHERE event_id = ? AND revision = ?`)
        .run(id.eventId, id.revision);
  }

  /** Nothing is accepted after acceptBy: forget a round the DSM did not accept by then. */
  private async forget(id: RoundId): Promise<void> {
    const gone = await this.deps.store.commit(() => {
      const r = this.row(id);
      if (!r || r.reporters !== null) return false;
      this.deleteRound(id);
      return true;
    });
    if (gone) this.disarm(id);
  }

  /** Stored once per (round, shard), before the answer (so its sender stops retrying only once it is kept). */
  private async receiveBatch(from: string, batch: z.infer<typeof batchSchema>): Promise<void> {
    const { store } = this.deps;
    const outcome = await store.commit(() => {
      const r = this.row(batch);
      const taken = this.batchShards(batch).has(from);
      if (r?.released) return taken ? 'repeat' : 'late';
      if (!r && !this.willOpen(batch)) return 'late';
      if (taken) return 'repeat';
      store
        .statement('INSERT INTO dr_gateway_batches (event_id, revision, shard) VALUES (?, ?, ?)')
        .run(batch.eventId, batch.revision, from);
      const insert = store.statement(
        'INSERT INTO dr_gateway_bids (event_id, revision, pseudonym, shard, quantity_wh, price) VALUES (?, ?, ?, ?, ?, ?)',
      );
      for (const b of batch.bids)
        insert.run(batch.eventId, batch.revision, b.pseudonym, from, b.quantityWh, b.pricePerMWh);
      return r ? 'stored' : 'early';
    });
    if (outcome === 'stored') await this.release(batch, false);
    if (outcome !== 'late') return;
    this.stats.refusedBatches++;
    this.deps.log.warn({ from }, 'a bid batch after the release refused: its bids lapse');
    await this.deps.cluster.send(from, LATE, { eventId: batch.eventId, revision: batch.revision });
  }

  /**
   * Whether a batch that came before this gateway's own deadline (shards' clocks differ) belongs
   * to a round this gateway will open.
   */
  private willOpen({ eventId, revision }: RoundId): boolean {
    const { dr, cluster } = this.deps;
    const event = dr.event(eventId);
    return event?.stage === 'open' && event.revision === revision && dr.gatewayOf(eventId) === cluster.shard;
  }

  /**
   * The union of the batches that came, shuffled once, to the DSM; the late shards are told. Once
   * every shard's batch is here, or (`due`) once the grace ran out; at most once.
   */
  private async release(id: RoundId, due: boolean): Promise<void> {
    const { store } = this.deps;
    const out = await store.commit(() => {
      const r = this.row(id);
      if (!r || r.released) return undefined;
      const took = this.batchShards(id);
      const late = shardsIn(r.expected).filter((s) => !took.has(s));
      if (!due && late.length > 0) return undefined;
      store
        .statement('UPDATE dr_gateway_rounds SET released = 1 WHERE event_id = ? AND revision = ?')
        .run(id.eventId, id.revision);
      const bids = store
        .statement(
          `SELECT pseudonym, quantity_wh AS quantityWh, price AS pricePerMWh FROM dr_gateway_bids
           WHERE event_id = ? AND revision = ?`,
        )
        .all(id.eventId, id.revision) as PseudoBid[];
      return { dsmId: r.dsm_id, late, bids };
    });
    if (!out) return;
    this.disarm(id, ['release']);
    this.stats.released++;
    const { dsmId, late, bids } = out;
    this.run(async () => {
      const body = { v: PROTOCOL_VERSION, eventId: id.eventId, bids: shuffled(bids) };
      await this.deps.outbound.publish(topics.pseudoBids(dsmId, id.eventId), JSON.stringify(body));
      if (late.length === 0) return;
      this.stats.lateShards += late.length;
      this.deps.log.warn({ late }, 'shards late with their bids: released without them, their bids lapse');
      const round = { eventId: id.eventId, revision: id.revision };
      await Promise.all(late.map((s) => this.deps.cluster.send(s, LATE, round)));
    });
  }

  /** A shard's compliance results, kept once per (round, shard) while the report is open. */
  private async receiveReport(from: string, report: z.infer<typeof complianceBatchSchema>): Promise<void> {
    const { store, log } = this.deps;
    const outcome = await store.commit(() => {
      const r = this.row(report);
      const reported = shardsIn(r?.reported ?? null);
      if (!r || r.reporters === null || reported.includes(from)) return 'none';
      const shardOf = store.statement(
        'SELECT shard FROM dr_gateway_bids WHERE event_id = ? AND revision = ? AND pseudonym = ?',
      );
      const own = (p: string) =>
        (shardOf.get(report.eventId, report.revision, p) as { shard: string } | undefined)?.shard === from;
      if (!report.results.every((x) => own(x.pseudonym))) return 'foreign';
      const set = store.statement(
        'UPDATE dr_gateway_bids SET delivered = ? WHERE event_id = ? AND revision = ? AND pseudonym = ?',
      );
      for (const x of report.results)
        set.run(x.delivered ? 1 : 0, report.eventId, report.revision, x.pseudonym);
      store
        .statement('UPDATE dr_gateway_rounds SET reported = ? WHERE event_id = ? AND revision = ?')
        .run(JSON.stringify([...reported, from]), report.eventId, report.revision);
      return 'kept';
    });
    if (outcome === 'none' && report.results.length > 0)
      log.warn({ from }, 'compliance results for no open report refused');
    if (outcome === 'foreign')
      log.warn({ from }, "compliance results naming another shard's pseudonyms refused");
    if (outcome === 'kept') await this.report(report, false);
  }

  /**
   * One compliance report of the results that came, shuffled: once every shard waited for has
   * reported, or (`due`) once the grace ran out. The round ends here, its rows deleted as they are read.
   */
  private async report(id: RoundId, due: boolean): Promise<void> {
    const { store } = this.deps;
    const out = await store.commit(() => {
      const r = this.row(id);
      if (!r || r.reporters === null) return undefined;
      const reported = new Set(shardsIn(r.reported));
      const late = shardsIn(r.reporters).filter((s) => !reported.has(s));
      if (!due && late.length > 0) return undefined;
      const results = (
        store
          .statement(
            `SELECT pseudonym, delivered FROM dr_gateway_bids
             WHERE event_id = ? AND revision = ? AND delivered IS NOT NULL`,
          )
          .all(id.eventId, id.revision) as { pseudonym: string; delivered: number }[]
      ).map((x) => ({ pseudonym: x.pseudonym, delivered: x.delivered === 1 }));
      this.deleteRound(id);
      return { dsmId: r.dsm_id, late, results };
    });
    if (!out) return;
    this.disarm(id);
    const { dsmId, late, results } = out;
    if (late.length > 0) {
      this.stats.lateShards += late.length;
      this.deps.log.warn({ late }, 'shards late with compliance: reported without their results');
    }
    const body = { v: PROTOCOL_VERSION, eventId: id.eventId, results: shuffled(results) };
    this.stats.reports++;
    this.run(() => this.deps.outbound.publish(topics.compliance(dsmId, id.eventId), JSON.stringify(body)));
  }

  private run(fn: () => Promise<void>): void {
    fn().catch((err: Error) =>
      this.deps.log.error({ err: err.message }, 'demand-response gateway step failed'),
    );
  }
}
