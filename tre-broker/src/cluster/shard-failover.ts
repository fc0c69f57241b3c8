/**
 * One TRE of a shard among several (issue 21): whoever holds the shard's lease (shard-lease.ts) is
 * its primary and writes its journal (shard-journal.ts); the others are standbys that follow the
 * journal into their own stores and take the lease when the primary stops renewing it.
 *
 * `start` decides the role: it gets the shard key (kept in the store, shard-key.ts: made by the
 * first primary of an empty journal, else handed over by the attested primary, shard-handover.ts),
 * tries the lease, and either becomes primary or catches up and follows. `takeOver` (a standby)
 * waits for the lease, then becomes primary. Becoming primary: catch up with the journal (replay
 * what the store lacks; a store that diverged is wiped and rebuilt from entry 1), write from there,
 * append an empty marker entry (it fences an old writer still running), and only then journal the
 * store's commits (`JournaledCommits`). The caller wires its flows after that, from replayed data.
 * Losing the lease stops journal writing at once (`onLost`): the TRE must stop acknowledging.
 */
import { randomBytes } from 'node:crypto';
import { JetStreamApiError, jetstreamManager } from '@nats-io/jetstream';
import { type NatsConnection, NoRespondersError, TimeoutError } from '@nats-io/transport-node';
import { shardSubjects } from '@tre/protocol';
import type { Logger } from '../log.js';
import {
  applyChanges,
  type JournalEntryMeta,
  JournaledCommits,
  type JournalPosition,
  journalState,
  lastChange,
  migrateChangeJournal,
  resumeWriting,
  tableShapes,
} from '../store/change-journal.js';
import type { Store } from '../store/store.js';
import type { HelloIdentity, PeerTrust } from './peer-verification.js';
import { requestShardKey, serveShardKey } from './shard-handover.js';
import {
  type Follower,
  type JournalEntry,
  ShardJournal,
  ShardJournalError,
  type ShardJournalOptions,
} from './shard-journal.js';
import { keepShardKey, storedShardKey } from './shard-key.js';
import { LeaseError, type LeaseLoss, ShardLease, type ShardLeaseOptions } from './shard-lease.js';

export type ShardRole = 'primary' | 'standby';

export interface ShardFailoverOptions {
  /** The lease bucket's TTL (`ensureShardStreams`' `leaseTtlMs`): a standby takes over within it after a crash. */
  leaseTtlMs: number;
  lease?: Omit<ShardLeaseOptions, 'ttlMs'>;
  journal?: ShardJournalOptions;
  /** How long a standby waits between asking the primary for the shard key. */
  handoverRetryMs?: number;
  /** How long taking the shard waits out JetStream not answering (default 60 s). */
  unavailableForMs?: number;
}

/** nats-server's code for a stream that does not exist. */
const STREAM_NOT_FOUND = 10059;

/** Whether a failure is JetStream not answering now (it may answer later), not a refusal. */
function jetStreamUnavailable(err: unknown): boolean {
  if (err instanceof ShardJournalError) return err.code === 'JOURNAL_UNAVAILABLE';
  if (err instanceof JetStreamApiError) return err.status === 503;
  // JetStreamNotEnabled (no responders on the API: no leader yet) is not exported by @nats-io/jetstream.
  return (
    err instanceof TimeoutError ||
    err instanceof NoRespondersError ||
    (err instanceof Error && err.name === 'JetStreamNotEnabled')
  );
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export class ShardFailover {
  readonly lease: ShardLease;
  private journalOf: ShardJournal | undefined;
  private follower: Follower | undefined;
  private stopServing: (() => void) | undefined;
  private currentRole: ShardRole | undefined;

  constructor(
    private readonly deps: {
      nats: NatsConnection;
      store: Store;
      me: HelloIdentity;
      trust: PeerTrust;
      options: ShardFailoverOptions;
      /** Called once when the primary loses the lease: journal writing has stopped; stop acknowledging. */
      onLost: (why: LeaseLoss) => void;
      log: Logger;
    },
  ) {
    this.lease = new ShardLease({
      nats: deps.nats,
      shard: deps.me.shard,
      options: { ...deps.options.lease, ttlMs: deps.options.leaseTtlMs },
      onLost: (why) => {
        this.journalOf?.stopWriting(`the shard lease was ${why}`);
        this.stopServing?.();
        deps.onLost(why);
      },
      // A lapsed lease the server expired is taken again only by the journal's writer still.
      mayRegain: async () => !this.journalOf || this.journalOf.stillWriting(journalState(deps.store).writer),
      log: deps.log,
    });
  }

  get shard(): string {
    return this.deps.me.shard;
  }

  get role(): ShardRole | undefined {
    return this.currentRole;
  }

  get journal(): ShardJournal {
    if (!this.journalOf) throw new Error('the shard journal is opened by start()');
    return this.journalOf;
  }

  /** Whether the shard has a journal stream (an admin made it: `ensureShardStreams`). */
  async journaled(): Promise<boolean> {
    return this.streamLastSeq().then(
      () => true,
      (err: unknown) => {
        if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return false;
        if (/no responders|jetstream not enabled/i.test(`${(err as Error).name} ${(err as Error).message}`))
          return false;
        throw err;
      },
    );
  }

  /** Gets the shard key, then takes the lease (primary) or follows the journal (standby). */
  async start(signal?: AbortSignal): Promise<ShardRole> {
    const { store, log } = this.deps;
    migrateChangeJournal(store);
    let key = storedShardKey(store, this.shard);
    let held = await this.lease.acquire().then(
      () => true,
      (err: unknown) => {
        if (err instanceof LeaseError && err.code === 'LEASE_HELD') return false;
        throw err;
      },
    );
    if (held && !key) {
      if ((await this.streamLastSeq()) === 0) {
        key = randomBytes(32);
        keepShardKey(store, this.shard, key);
        log.info({ shard: this.shard }, 'first primary of the shard: made the shard key');
      } else {
        log.warn(
          { shard: this.shard },
          "the shard's journal has entries but this TRE has no shard key: standing by for a primary to hand it over",
        );
        await this.lease.release();
        held = false;
      }
    }
    if (!key) {
      key = await this.fetchKey(signal);
      keepShardKey(store, this.shard, key);
    }
    this.journalOf = new ShardJournal({
      nats: this.deps.nats,
      shard: this.shard,
      shardKey: key,
      log: log.child({ module: 'shard-journal' }),
      options: this.deps.options.journal,
    });
    if (held) {
      await this.becomePrimary(key);
      return 'primary';
    }
    const position = await this.catchUp();
    this.follower = this.journal.follow(position.seq + 1, (e) => this.apply(e));
    this.follower.done.catch((err: Error) => {
      // The TRE stopping closes its NATS connection under the follower: not a failure.
      if (this.deps.nats.isClosed() || this.deps.nats.isDraining())
        log.info('journal follower stopped with the NATS connection');
      else log.error({ err: err.message }, 'journal follower failed');
    });
    this.currentRole = 'standby';
    log.info({ shard: this.shard, seq: position.seq }, 'standby of the shard: following its journal');
    return 'standby';
  }

  /**
   * A standby: waits for the lease, then becomes primary; resolves with how long the takeover took
   * (ms). JetStream not answering for a while (a node died, leaders being elected) is waited out.
   */
  async takeOver(signal?: AbortSignal): Promise<number> {
    await this.lease.waitToAcquire(signal);
    const started = performance.now();
    const last = await this.whileUnavailable('read the journal head', () => this.journal.lastSeq(), signal);
    const follower = this.follower!;
    // A group the old primary left unfinished never completes: wait a little, then replay decides.
    await Promise.race([follower.reached(last).catch(() => {}), sleep(2_000)]);
    await follower.stop();
    this.follower = undefined;
    await this.becomePrimary(storedShardKey(this.deps.store, this.shard)!, signal);
    return performance.now() - started;
  }

  /**
   * Runs `step` again while JetStream does not answer (timeouts, no responders, an unanswered
   * append), up to `unavailableForMs`, as long as this TRE holds the lease (lapsed counts).
   */
  private async whileUnavailable<T>(what: string, step: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const giveUpAt = performance.now() + (this.deps.options.unavailableForMs ?? 60_000);
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (err) {
        if (!jetStreamUnavailable(err) || performance.now() >= giveUpAt) throw err;
        signal?.throwIfAborted();
        if (!this.lease.lapsed && !this.lease.holding)
          throw new LeaseError(
            'LEASE_LOST',
            `shard ${this.shard}'s lease was lost while trying to ${what}`,
            err,
          );
        this.deps.log.warn(
          { attempt, err: (err as Error).message },
          `JetStream not answering; trying again to ${what}`,
        );
        await sleep(Math.min(250 * attempt, 2_000));
      }
    }
  }

  /** Clean stop: releases the lease (a standby takes over at once) and stops writing. Call after the store settled. */
  async stop(): Promise<void> {
    this.stopServing?.();
    await this.follower?.stop();
    await this.lease.release();
    this.journalOf?.stopWriting('the TRE stopped');
  }

  private async becomePrimary(key: Buffer, signal?: AbortSignal): Promise<void> {
    const { store, log } = this.deps;
    const position = await this.whileUnavailable(
      'start writing the journal',
      () => this.startJournal(),
      signal,
    );
    JournaledCommits.attach(store, this.journal, { after: position });
    this.stopServing = await serveShardKey({
      nats: this.deps.nats,
      me: this.deps.me,
      trust: this.deps.trust,
      shardKey: key,
      log,
    });
    this.currentRole = 'primary';
    log.info({ shard: this.shard, seq: position.seq }, 'primary of the shard: writing its journal');
  }

  /** Catches up, then appends the empty marker entry after the store's position; returns the position. */
  private async startJournal(): Promise<JournalPosition> {
    const { store, log } = this.deps;
    let position = await this.catchUp();
    const { writer } = journalState(store);
    for (let attempt = 0; ; attempt++) {
      this.journal.startWriting(position);
      try {
        // An empty entry: refused if anything was appended after our position, and it fences a
        // writer that is still behind.
        position = await this.journal.append({ writer, upTo: position.upTo, sqls: [] });
        break;
      } catch (err) {
        if (!(err instanceof ShardJournalError) || err.code !== 'JOURNAL_FENCED' || attempt >= 5) throw err;
        log.warn(
          { seq: position.seq },
          'the journal moved on while taking the shard over: catching up again',
        );
        position = await this.catchUp();
      }
    }
    return position;
  }

  /** Brings the store to the journal's head; returns the position to write after. */
  private async catchUp(): Promise<JournalPosition> {
    const { store, log } = this.deps;
    for (;;) {
      const { writer, position } = journalState(store);
      const after: JournalEntryMeta[] = [];
      await this.journal.replay(position.seq + 1, ({ seq, writer, upTo }) => {
        after.push({ seq, writer, upTo });
      });
      const decision = resumeWriting({ writer, position, lastChange: lastChange(store) }, after);
      switch (decision.kind) {
        case 'write':
          return decision.position;
        case 'replay':
          await this.journal.replay(decision.fromSeq, (e) => this.apply(e));
          break;
        case 'diverged': {
          log.warn(
            { shard: this.shard, reason: decision.message },
            'store diverged from the journal: rebuilding it',
          );
          this.wipe();
          await this.journal.replay(1, (e) => this.apply(e));
          break;
        }
      }
    }
  }

  private apply(e: JournalEntry): void {
    applyChanges(this.deps.store.db, e.sqls, { seq: e.seq, upTo: e.upTo });
  }

  /** Empties every journaled table and the store's position (the shard key stays). */
  private wipe(): void {
    const { db } = this.deps.store;
    const key = storedShardKey(this.deps.store, this.shard)!;
    const fk = db.pragma('foreign_keys', { simple: true }) as number;
    db.pragma('foreign_keys = OFF');
    try {
      db.transaction(() => {
        for (const t of tableShapes(db)) db.prepare(`DELETE FROM "${t.name.replaceAll('"', '""')}"`).run();
        db.prepare('DELETE FROM change_outbox').run();
        db.prepare('UPDATE change_journal SET seq = 0, up_to = 0').run();
        db.prepare("DELETE FROM sqlite_sequence WHERE name = 'change_outbox'").run();
      })();
    } finally {
      if (fk) db.pragma('foreign_keys = ON');
    }
    keepShardKey(this.deps.store, this.shard, key);
  }

  private async fetchKey(signal?: AbortSignal): Promise<Buffer> {
    const { log } = this.deps;
    for (;;) {
      signal?.throwIfAborted();
      try {
        const key = await requestShardKey({
          nats: this.deps.nats,
          me: this.deps.me,
          trust: this.deps.trust,
          log,
        });
        log.info({ shard: this.shard }, 'shard key received from the attested primary');
        return key;
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'no shard key yet; asking the primary again');
        await sleep(this.deps.options.handoverRetryMs ?? 1_000);
      }
    }
  }

  /** The journal stream's last sequence (0 when empty), without the shard key. */
  private async streamLastSeq(): Promise<number> {
    const jsm = await jetstreamManager(this.deps.nats, { checkAPI: false });
    return (await jsm.streams.info(shardSubjects.journalStream(this.shard))).state.last_seq;
  }
}
