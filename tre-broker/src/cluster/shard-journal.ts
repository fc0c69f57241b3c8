/**
 * The journal of one shard on JetStream (issue 21): its store's committed changes
 * (store/change-journal.ts), encrypted, on an R3 file stream `TRE_JOURNAL_<shard>`, subject
 * `tre.journal.<shard>`. A standby TRE holding the shard's key follows it and takes the shard over.
 *
 * Entry: the JSON `{w: writer, u: last change number, k: part, n: parts, c: statements}`,
 * deflated, sealed with AES-256-GCM under a key derived from the 32-byte shard key (HKDF-SHA256,
 * info naming the shard); its additional data names the stream and the entry's sequence, so an
 * entry cannot be moved, reordered or replayed elsewhere. NATS sees sizes and timing only.
 *
 * Fencing: each part is published with the expected last sequence of the stream (the writer's
 * head), so a writer that is not at the head is refused (`JOURNAL_FENCED`) and stays refused: it
 * must stop acknowledging. Its `Nats-Msg-Id` (writer, change number, part) makes a retried
 * publish a duplicate instead of a second entry; nats-server 2.9.10 answers the duplicate before
 * checking the expected sequence. An append whose outcome stayed unknown (no ack before the
 * deadline) is settled before the next: entries after the head that carry this writer's id are
 * its own (their changes come again in the next entry: replaying a run of changes twice in a row
 * gives the same rows); anything else fences it.
 *
 * A batch larger than `maxPartBytes` goes in several parts (NATS refuses payloads above 1 MiB); a
 * follower applies an entry only once its last part is in, and drops a group whose writer went on
 * with another (never acknowledged). Followers use an ordered consumer (no acks, heartbeats) and
 * recreate it from their position when heartbeats stop (a server restarted, a consumer lost).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import {
  type Consumer,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import {
  AuthorizationError,
  ClosedConnectionError,
  DrainingConnectionError,
  InvalidArgumentError,
  InvalidOperationError,
  InvalidSubjectError,
  type NatsConnection,
  nanos,
  PermissionViolationError,
} from '@nats-io/transport-node';
import { shardSubjects } from '@tre/protocol';
import type { Logger } from '../log.js';
import type { ChangeBatch, ChangeSink, JournalPosition } from '../store/change-journal.js';
import { ensureLeaseBucket } from './shard-lease.js';

export type ShardJournalErrorCode =
  | 'JOURNAL_FENCED'
  | 'JOURNAL_UNAVAILABLE'
  | 'JOURNAL_CORRUPT'
  | 'JOURNAL_STOPPED'
  | 'INVALID_ARGUMENT';

export class ShardJournalError extends Error {
  override readonly name = 'ShardJournalError';
  constructor(
    readonly code: ShardJournalErrorCode,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** A complete entry as followers see it. */
export interface JournalEntry {
  /** The stream sequence of its last part. */
  seq: number;
  writer: string;
  upTo: number;
  sqls: string[];
}

export interface ShardJournalOptions {
  /** Plaintext bytes of one part at most, before compression (NATS' max_payload is 1 MiB). */
  maxPartBytes?: number;
  /** How long one publish waits for its ack. */
  publishTimeoutMs?: number;
  /** How long an append retries a publish without an answer (a node down, a leader election). */
  appendDeadlineMs?: number;
  /** The followers' consumer heartbeat; missing `missedHeartbeats` of them recreates the consumer. */
  heartbeatMs?: number;
  missedHeartbeats?: number;
}

const DEFAULTS = {
  maxPartBytes: 512 * 1024,
  publishTimeoutMs: 5_000,
  appendDeadlineMs: 20_000,
  heartbeatMs: 1_000,
  missedHeartbeats: 3,
  /** Pull size of followers. */
  batch: 256,
  /** Duplicate window of the stream: longer than any append retries. */
  duplicateWindowMs: 120_000,
} as const;

type Settings = Required<ShardJournalOptions> & { batch: number };

/** nats-server's error code for a publish whose expected last sequence is not the stream's. */
const WRONG_LAST_SEQUENCE = 10071;
const STREAM_NOT_FOUND = 10059;

/** Length of the shard key in bytes. */
export const SHARD_KEY_BYTES = 32;
const VERSION = 1;
const NONCE = 12;
const TAG = 16;

/** The JSON inside an entry (short keys: it is sent for every commit). */
interface Part {
  w: string;
  u: number;
  k: number;
  n: number;
  c: string[];
}

/** The additional data of the entry at `seq` of `stream`. */
const aadOf = (stream: string, seq: number) => Buffer.from(`tre-journal/v1 ${stream} ${seq}`);

/** Seals a part for sequence `seq`: version, nonce, AES-256-GCM ciphertext and tag. */
export function sealPart(key: Buffer, stream: string, seq: number, part: Part): Uint8Array {
  const nonce = randomBytes(NONCE);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(aadOf(stream, seq));
  const body = cipher.update(deflateRawSync(JSON.stringify(part), { level: 1 }));
  const end = cipher.final();
  return Buffer.concat([Buffer.of(VERSION), nonce, body, end, cipher.getAuthTag()]);
}

/** Opens the entry stored at `seq`; throws JOURNAL_CORRUPT if it was not sealed for there with this key. */
export function openPart(key: Buffer, stream: string, seq: number, data: Uint8Array): Part {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  try {
    if (buf.length < 1 + NONCE + TAG || buf[0] !== VERSION) throw new Error(`not a version ${VERSION} entry`);
    const decipher = createDecipheriv('aes-256-gcm', key, buf.subarray(1, 1 + NONCE));
    decipher.setAAD(aadOf(stream, seq));
    decipher.setAuthTag(buf.subarray(buf.length - TAG));
    const plain = Buffer.concat([
      decipher.update(buf.subarray(1 + NONCE, buf.length - TAG)),
      decipher.final(),
    ]);
    const part = JSON.parse(inflateRawSync(plain).toString('utf8')) as Part;
    if (typeof part.w !== 'string' || !Array.isArray(part.c)) throw new Error('not a journal part');
    return part;
  } catch (err) {
    throw new ShardJournalError(
      'JOURNAL_CORRUPT',
      `entry ${seq} of ${stream} does not open with this shard's key (${(err as Error).message}): it was not written there by a holder of the key, or the key is not this shard's; the follower stopped before it`,
      err,
    );
  }
}

/** The journal's AES key of a shard, from its 32-byte shard key. */
export function journalKey(shardKey: Buffer, shard: string): Buffer {
  if (shardKey.length !== SHARD_KEY_BYTES)
    throw new ShardJournalError(
      'INVALID_ARGUMENT',
      `the shard key must be ${SHARD_KEY_BYTES} bytes, got ${shardKey.length}`,
    );
  return Buffer.from(hkdfSync('sha256', shardKey, Buffer.alloc(0), `tre/journal/v1/${shard}`, 32));
}

/** Splits a batch's statements into parts of at most `max` bytes (a larger statement alone). */
export function splitParts(batch: ChangeBatch, max: number): Part[] {
  const groups: string[][] = [[]];
  let size = 0;
  for (const sql of batch.sqls) {
    if (size + sql.length > max && groups.at(-1)!.length > 0) {
      groups.push([]);
      size = 0;
    }
    groups.at(-1)!.push(sql);
    size += sql.length;
  }
  return groups.map((c, k) => ({ w: batch.writer, u: batch.upTo, k, n: groups.length, c }));
}

/**
 * Puts parts back together (pure): an entry once its last part is in; a group another part
 * interrupts is dropped (its writer stopped or was replaced before finishing, so never acked).
 */
export class PartAssembler {
  private open: { writer: string; upTo: number; next: number; sqls: string[] } | undefined;
  /** Parts dropped so far (incomplete groups, orphans). */
  dropped = 0;

  push(seq: number, part: Part): JournalEntry | undefined {
    if (part.k === 0) {
      if (this.open) this.dropped += this.open.next;
      this.open = { writer: part.w, upTo: part.u, next: 0, sqls: [] };
    }
    const o = this.open;
    if (!o || o.writer !== part.w || o.upTo !== part.u || o.next !== part.k) {
      this.dropped += 1 + (o?.next ?? 0);
      this.open = undefined;
      return undefined;
    }
    for (const sql of part.c) o.sqls.push(sql);
    o.next++;
    if (o.next < part.n) return undefined;
    this.open = undefined;
    return { seq, writer: part.w, upTo: part.u, sqls: o.sqls };
  }
}

/** Creates each shard's journal stream and lease bucket (an admin's connection: shards may not). */
export async function ensureShardStreams(
  jsm: JetStreamManager,
  shards: readonly string[],
  opts: { replicas?: number; leaseTtlMs: number },
): Promise<void> {
  const replicas = opts.replicas ?? 3;
  for (const shard of shards) {
    const name = shardSubjects.journalStream(shard);
    const exists = await jsm.streams.info(name).then(
      () => true,
      (err: unknown) => {
        if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return false;
        throw err;
      },
    );
    if (!exists)
      await jsm.streams.add({
        name,
        subjects: [shardSubjects.journal(shard)],
        storage: StorageType.File,
        num_replicas: replicas,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.New,
        duplicate_window: nanos(DEFAULTS.duplicateWindowMs),
        // Entries are never removed through the API (a later snapshot will need an admin's update).
        deny_delete: true,
        deny_purge: true,
      });
    await ensureLeaseBucket(jsm, shard, { replicas, ttlMs: opts.leaseTtlMs });
  }
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Failures that are answers (nothing stored) or that no retry can change. */
const DEFINITIVE = [
  PermissionViolationError,
  AuthorizationError,
  ClosedConnectionError,
  DrainingConnectionError,
  InvalidArgumentError,
  InvalidOperationError,
  InvalidSubjectError,
];

/** Whether a failure (or one it wraps: a request's carries the server's answer) is definitive. */
function definitive(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++)
    if (DEFINITIVE.some((kind) => e instanceof kind)) return true;
  return false;
}

/** Whether a publish failure may still have stored the message (no answer) and may be retried. */
function transient(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return err.status === 503;
  return !definitive(err);
}

export interface Follower {
  /** The sequence of the last entry applied. */
  readonly position: number;
  /** Resolves once an entry at or after `seq` was applied (or rejects if the follower failed). */
  reached(seq: number): Promise<void>;
  /** Stops following; resolves once the current entry (if any) is applied. */
  stop(): Promise<void>;
  /** Settles when the follower ends: resolves after `stop`, rejects on a corrupt entry or a failed apply. */
  readonly done: Promise<void>;
}

export class ShardJournal implements ChangeSink {
  readonly stream: string;
  readonly subject: string;
  private readonly key: Buffer;
  private readonly o: Settings;
  private readonly js: JetStreamClient;
  private jsm: Promise<JetStreamManager> | undefined;
  /** The sequence this writer is at (undefined: not writing). */
  private head: number | undefined;
  /** Set when an append ended without an answer: settled before the next one. */
  private uncertain = false;
  private stopped: ShardJournalError | undefined;
  private appending: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly deps: {
      nats: NatsConnection;
      shard: string;
      /** The shard's 32-byte key (every TRE that may serve the shard holds it). */
      shardKey: Buffer;
      log: Logger;
      options?: ShardJournalOptions;
    },
  ) {
    this.stream = shardSubjects.journalStream(deps.shard);
    this.subject = shardSubjects.journal(deps.shard);
    this.key = journalKey(deps.shardKey, deps.shard);
    const given = Object.fromEntries(Object.entries(deps.options ?? {}).filter(([, v]) => v !== undefined));
    this.o = { ...DEFAULTS, ...given } as Settings;
    this.js = jetstream(deps.nats, { checkAPI: false, timeout: this.o.publishTimeoutMs });
  }

  private manager(): Promise<JetStreamManager> {
    this.jsm ??= jetstreamManager(this.deps.nats, { checkAPI: false, timeout: this.o.publishTimeoutMs });
    return this.jsm;
  }

  /** The stream's last sequence (0 when empty). */
  async lastSeq(): Promise<number> {
    const info = await (await this.manager()).streams.info(this.stream);
    return info.state.last_seq;
  }

  /**
   * Makes this TRE the writer after `position.seq` (the last entry its store holds): appends are
   * refused if anything else was appended after it.
   */
  startWriting(position: Pick<JournalPosition, 'seq'>): void {
    this.head = position.seq;
    this.uncertain = false;
    this.stopped = undefined;
  }

  /** Refuses every later append (the lease was lost, or the TRE stops). */
  stopWriting(reason: string): void {
    this.stopped ??= new ShardJournalError(
      'JOURNAL_STOPPED',
      `this TRE no longer writes shard ${this.deps.shard}'s journal: ${reason}`,
    );
  }

  /**
   * Whether this TRE still writes the journal: nothing but its own entries after its head (they
   * are adopted, as after an unanswered append); false once fenced or stopped. True before
   * `startWriting` (its first append is fenced by position anyway).
   */
  stillWriting(writer: string): Promise<boolean> {
    const run = this.appending.then(async () => {
      if (this.stopped) return false;
      if (this.head === undefined) return true;
      try {
        await this.settleUncertain(writer);
        return true;
      } catch (err) {
        if (err instanceof ShardJournalError && err.code === 'JOURNAL_FENCED') return false;
        throw err;
      }
    });
    this.appending = run.catch(() => {});
    return run;
  }

  /** Appends a batch; resolves with its position once every part is acknowledged by the stream. */
  append(batch: ChangeBatch): Promise<JournalPosition> {
    const run = this.appending.then(() => this.appendNow(batch));
    this.appending = run.catch(() => {});
    return run;
  }

  private async appendNow(batch: ChangeBatch): Promise<JournalPosition> {
    if (this.stopped) throw this.stopped;
    if (this.head === undefined)
      throw new ShardJournalError('INVALID_ARGUMENT', 'call startWriting(position) before appending');
    if (this.uncertain)
      await this.settleUncertain(batch.writer).catch((err: unknown) => {
        if (err instanceof ShardJournalError) throw err;
        throw new ShardJournalError(
          'JOURNAL_UNAVAILABLE',
          `cannot check shard ${this.deps.shard}'s journal after an unanswered append (${(err as Error).message}); nothing was acknowledged`,
          err,
        );
      });
    // Half the server's max_payload at most: room for JSON escapes and the cipher's bytes.
    const max = Math.min(this.o.maxPartBytes, Math.floor((this.deps.nats.info?.max_payload ?? 1 << 20) / 2));
    for (const part of splitParts(batch, max)) this.head = await this.publish(part);
    return { seq: this.head, upTo: batch.upTo };
  }

  /** Publishes one part after the head, retrying while unanswered; returns its sequence. */
  private async publish(part: Part): Promise<number> {
    const expect = this.head!;
    const data = sealPart(this.key, this.stream, expect + 1, part);
    const msgID = `${part.w}.${part.u}.${part.k}`;
    const deadline = Date.now() + this.o.appendDeadlineMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const ack = await this.js.publish(this.subject, data, {
          msgID,
          expect: { lastSequence: expect },
          timeout: this.o.publishTimeoutMs,
        });
        if (ack.stream !== this.stream)
          throw new ShardJournalError(
            'JOURNAL_UNAVAILABLE',
            `${this.subject} is stored by ${ack.stream}, not ${this.stream}: fix the streams (ensureShardStreams)`,
          );
        // A duplicate is this part stored by an earlier attempt (at the head, or before it).
        return ack.duplicate ? Math.max(ack.seq, expect) : ack.seq;
      } catch (err) {
        if (err instanceof ShardJournalError) throw err;
        if (err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE)
          throw this.fence(expect, err);
        if (!transient(err) || Date.now() >= deadline) {
          this.uncertain = transient(err);
          throw new ShardJournalError(
            'JOURNAL_UNAVAILABLE',
            `shard ${this.deps.shard}'s journal did not take entry ${expect + 1} (${(err as Error).message}); nothing was acknowledged, the next append carries these changes`,
            err,
          );
        }
        this.deps.log.warn({ attempt, err: (err as Error).message }, 'journal append unanswered; retrying');
        await sleep(Math.min(100 * 2 ** attempt, 1_000));
      }
    }
  }

  /** After an unanswered append: the entries after the head must be this writer's own (adopted), or it is fenced. */
  private async settleUncertain(writer: string): Promise<void> {
    const jsm = await this.manager();
    const last = await this.lastSeq();
    for (let seq = this.head! + 1; seq <= last; seq++) {
      const msg = await jsm.streams.getMessage(this.stream, { seq });
      const id = msg?.header?.get('Nats-Msg-Id') ?? '';
      if (!id.startsWith(`${writer}.`))
        throw this.fence(seq - 1, new Error(`entry ${seq} is not this writer's`));
      this.head = seq;
    }
    this.uncertain = false;
  }

  private fence(expected: number, cause: unknown): ShardJournalError {
    this.stopped = new ShardJournalError(
      'JOURNAL_FENCED',
      `another writer appended to shard ${this.deps.shard}'s journal after entry ${expected}: this TRE is not the shard's writer any more; stop acknowledging and exit (a standby took the shard over)`,
      cause,
    );
    return this.stopped;
  }

  /**
   * Applies every complete entry from `fromSeq` in order, then keeps following new ones. `apply`
   * may be async: the next entry waits for it.
   */
  follow(fromSeq: number, apply: (entry: JournalEntry) => void | Promise<void>): Follower {
    return this.follower(fromSeq, apply);
  }

  /** Applies every complete entry from `fromSeq` up to the stream's last one now; returns that sequence. */
  async replay(fromSeq: number, apply: (entry: JournalEntry) => void | Promise<void>): Promise<number> {
    const last = await this.lastSeq();
    if (last < fromSeq) return last;
    const follower = this.follower(fromSeq, apply);
    await Promise.race([follower.consumed(last), follower.done]);
    await follower.stop();
    await follower.done;
    return last;
  }

  private follower(fromSeq: number, apply: (entry: JournalEntry) => void | Promise<void>): JournalFollower {
    const source: EntrySource = {
      consumer: (from) =>
        this.js.consumers.get(this.stream, {
          opt_start_seq: from,
          deliver_policy: DeliverPolicy.StartSequence,
        }),
      open: (seq, data) => openPart(this.key, this.stream, seq, data),
    };
    return new JournalFollower(source, fromSeq, apply, this.o, this.deps.log);
  }
}

/** Where a follower reads: a new ordered consumer from a sequence, and how to open a stored part. */
interface EntrySource {
  consumer(fromSeq: number): Promise<Consumer>;
  open(seq: number, data: Uint8Array): Part;
}

/** One follower: a supervised ordered consumer that starts again from its position when it stalls. */
class JournalFollower implements Follower {
  private next: number;
  /** The last entry applied: what came before `fromSeq` counts as applied (the store holds it). */
  private applied: number;
  private stopping = false;
  private readonly assembler = new PartAssembler();
  private stopCurrent: (() => void) | undefined;
  private readonly waiters: {
    seq: number;
    done: () => void;
    fail: (err: unknown) => void;
    applied: boolean;
  }[] = [];
  readonly done: Promise<void>;

  constructor(
    private readonly source: EntrySource,
    fromSeq: number,
    private readonly apply: (entry: JournalEntry) => void | Promise<void>,
    private readonly o: Settings,
    private readonly log: Logger,
  ) {
    this.next = Math.max(1, fromSeq);
    this.applied = this.next - 1;
    this.done = this.run();
    this.done.then(
      () => this.settleWaiters(new ShardJournalError('JOURNAL_STOPPED', 'the follower was stopped')),
      (err: unknown) => this.settleWaiters(err),
    );
  }

  get position(): number {
    return this.applied;
  }

  reached(seq: number): Promise<void> {
    if (this.applied >= seq) return Promise.resolve();
    return new Promise((done, fail) => this.waiters.push({ seq, done, fail, applied: true }));
  }

  /** Resolves once every part up to `seq` was received (applied, or held in an incomplete group). */
  consumed(seq: number): Promise<void> {
    if (this.next > seq) return Promise.resolve();
    return new Promise((done, fail) => this.waiters.push({ seq, done, fail, applied: false }));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.stopCurrent?.();
    await this.done.catch(() => {});
  }

  private settleWaiters(err?: unknown) {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      const at = w.applied ? this.applied : this.next - 1;
      if (at >= w.seq) w.done();
      else if (err) w.fail(err);
      else continue;
      this.waiters.splice(i, 1);
    }
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      try {
        await this.consumeOnce();
        failures = 0;
      } catch (err) {
        if (err instanceof ShardJournalError && err.code === 'JOURNAL_CORRUPT') throw err;
        if (err instanceof ApplyFailed) throw err.cause;
        if (definitive(err)) throw err;
        failures++;
        this.log.warn({ err: (err as Error).message, next: this.next }, 'journal follower restarting');
        await sleep(Math.min(200 * 2 ** failures, 2_000));
      }
    }
  }

  /** Reads from `next` until the consumer stalls or is stopped. */
  private async consumeOnce(): Promise<void> {
    const consumer = await this.source.consumer(this.next);
    const messages = await consumer.consume({
      max_messages: this.o.batch,
      idle_heartbeat: this.o.heartbeatMs,
      expires: Math.max(1_000, this.o.heartbeatMs * 10),
    });
    this.stopCurrent = () => messages.stop();
    if (this.stopping) messages.stop();
    // Our own watchdog: after a reconnect the library may wait on a consumer that is gone without
    // reporting missed heartbeats, so silence (no message, no heartbeat) restarts it from `next`.
    // Time spent applying does not count (a long replay is not a silent consumer).
    let lastSign = performance.now();
    let applying = false;
    const silence = this.o.heartbeatMs * this.o.missedHeartbeats;
    const watchdog = setInterval(() => {
      if (applying || performance.now() - lastSign < silence) return;
      this.log.warn(
        { silentMs: Math.round(performance.now() - lastSign), next: this.next },
        'journal consumer silent; recreating it',
      );
      messages.stop();
    }, this.o.heartbeatMs);
    void (async () => {
      for await (const s of messages.status()) if (s.type === 'heartbeat') lastSign = performance.now();
    })();
    try {
      for await (const m of messages) {
        lastSign = performance.now();
        if (m.seq < this.next) continue; // already seen (a consumer recreated behind us)
        const entry = this.assembler.push(m.seq, this.source.open(m.seq, m.data));
        this.next = m.seq + 1;
        if (entry) {
          applying = true;
          try {
            await this.apply(entry);
          } catch (err) {
            throw new ApplyFailed(err);
          } finally {
            applying = false;
            lastSign = performance.now();
          }
          this.applied = entry.seq;
        }
        this.settleWaiters();
        if (this.stopping) break;
      }
    } finally {
      clearInterval(watchdog);
      messages.stop();
      this.stopCurrent = undefined;
      consumer.delete().catch(() => {});
    }
  }
}

class ApplyFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('apply failed');
  }
}
