/**
 * A shard's ownership lease (issue 21): key `holder` of the KV bucket `tre-lease-<shard>` (R3),
 * its value the holding TRE's instance id (nothing about households). nats-server 2.9 has no
 * per-key TTL, so the bucket's max age is the lease's TTL: a value not renewed within it expires.
 *
 * `acquire` creates the key (refused while another holds it); renewing updates it with the
 * revision last written (compare-and-swap) every `renewEveryMs`. The holder stops counting itself
 * the holder (`holding` false) `marginMs` before the TTL counted from its last renewal's sending,
 * so it has stepped back before the server can expire the value and let a standby in.
 *
 * Lapsed, not lost: a renewal that gets no answer (JetStream electing a leader after a node died
 * takes 4-9 s on nats-server 2.9, longer than a short TTL) lapses the lease (`onLapsed`); the
 * holder keeps trying and regains it when JetStream answers, unless another TRE took it first:
 * its own value still there (a renewal whose answer was lost moved the revision), or no value at
 * all (the server expired it) which it creates again. Acting while lapsed is safe because the
 * journal is fenced by expected-last-sequence (shard-journal.ts): a standby that took over appends
 * first, and every later append of the old holder is refused. A lease still lapsed after
 * `regainWithinMs`, or lapsed on a closed connection, is lost ('expired'); a renewal refused with
 * another holder's value is lost at once ('taken'). Either way `onLost` is called once: the TRE
 * must stop acknowledging and exit. A standby's `waitToAcquire` polls (an expiry sends no watch
 * event) and takes the lease once the value is gone; `release` deletes it (CAS) on a clean stop,
 * for an immediate takeover.
 */
import { randomUUID } from 'node:crypto';
import { JetStreamApiError, type JetStreamManager, jetstream } from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { shardSubjects } from '@tre/protocol';
import type { Logger } from '../log.js';

const KEY = 'holder';
/** nats-server's code for a write whose expected revision is not the key's. */
const WRONG_LAST_SEQUENCE = 10071;

export type LeaseErrorCode = 'LEASE_HELD' | 'LEASE_LOST' | 'LEASE_UNAVAILABLE';

export class LeaseError extends Error {
  override readonly name = 'LeaseError';
  constructor(
    readonly code: LeaseErrorCode,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** Why the lease was lost. */
export type LeaseLoss = 'taken' | 'expired';

export interface ShardLeaseOptions {
  /** The bucket's max age (give the bucket's own: `ensureLeaseBucket`). */
  ttlMs: number;
  /** How often the holder renews (default a third of the TTL). */
  renewEveryMs?: number;
  /** How long before the TTL the holder stops counting itself the holder, unrenewed (default a fifth of the TTL). */
  marginMs?: number;
  /** How long a lapsed lease (no renewal answered) is tried before it is lost (default 3 TTLs, at least 30 s). */
  regainWithinMs?: number;
  /** How often a standby tries to take the lease (default a quarter of the TTL, at most 1 s). */
  pollMs?: number;
  /** This TRE's instance id (default a random UUID). */
  instanceId?: string;
}

/** Creates the shard's lease bucket (an admin's connection), TTL = `ttlMs`. */
export async function ensureLeaseBucket(
  jsm: JetStreamManager,
  shard: string,
  opts: { replicas: number; ttlMs: number },
): Promise<void> {
  await new Kvm(jsm.jetstream()).create(shardSubjects.leaseBucket(shard), {
    replicas: opts.replicas,
    ttl: opts.ttlMs,
    history: 1,
  });
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

export class ShardLease {
  readonly instanceId: string;
  private readonly o: Required<Omit<ShardLeaseOptions, 'instanceId'>>;
  private kv: Promise<KV> | undefined;
  private revision = 0;
  /** performance.now() until which this holder may act on the lease. */
  private validUntil = 0;
  private renewTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private held = false;
  /** performance.now() when the lease lapsed (renewals unanswered), until it is regained or lost. */
  private lapsedAt: number | undefined;
  private giveUpTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: {
      nats: NatsConnection;
      shard: string;
      options: ShardLeaseOptions;
      /** Called once when a held lease is lost (not after `release` or `stop`). */
      onLost: (why: LeaseLoss) => void;
      /** Called when renewals went unanswered past the margin (the lease may come back), and when it came back. */
      onLapsed?: (lapsed: boolean) => void;
      /**
       * Asked before a lapsed lease whose value the server expired is created again: whether this
       * TRE may still act for the shard (nobody else wrote its journal since). No: lost ('taken').
       */
      mayRegain?: () => Promise<boolean>;
      log: Logger;
    },
  ) {
    const { ttlMs } = deps.options;
    if (!(ttlMs > 0)) throw new RangeError(`the lease TTL must be positive, got ${ttlMs}`);
    this.instanceId = deps.options.instanceId ?? randomUUID();
    this.o = {
      ttlMs,
      renewEveryMs: deps.options.renewEveryMs ?? ttlMs / 3,
      marginMs: deps.options.marginMs ?? ttlMs / 5,
      pollMs: deps.options.pollMs ?? Math.min(ttlMs / 4, 1_000),
      regainWithinMs: deps.options.regainWithinMs ?? Math.max(3 * ttlMs, 30_000),
    };
    if (this.o.renewEveryMs + this.o.marginMs >= ttlMs)
      throw new RangeError(
        'renewEveryMs + marginMs must be below the TTL (a renewal must land before the holder gives up)',
      );
  }

  /** Whether this TRE holds the lease now (and may act as the shard's primary). */
  get holding(): boolean {
    return this.held && performance.now() < this.validUntil;
  }

  private bucket(): Promise<KV> {
    this.kv ??= new Kvm(jetstream(this.deps.nats, { checkAPI: false })).open(
      shardSubjects.leaseBucket(this.deps.shard),
      { allow_direct: true } as Parameters<Kvm['open']>[1],
    );
    return this.kv;
  }

  /** Takes the lease now; refused (LEASE_HELD) while another TRE holds it. */
  async acquire(): Promise<void> {
    if (this.held) return;
    const kv = await this.bucket();
    const sentAt = performance.now();
    try {
      this.revision = await kv.create(KEY, this.instanceId);
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE) {
        const holder = await kv.get(KEY).then(
          (e) => e?.string(),
          () => undefined,
        );
        throw new LeaseError(
          'LEASE_HELD',
          `shard ${this.deps.shard}'s lease is held by ${holder ?? 'another TRE'}; it frees when not renewed for ${this.o.ttlMs} ms (waitToAcquire)`,
          err,
        );
      }
      throw new LeaseError(
        'LEASE_UNAVAILABLE',
        `cannot reach shard ${this.deps.shard}'s lease: ${(err as Error).message}`,
        err,
      );
    }
    this.held = true;
    this.extend(sentAt);
    this.renewTimer = setInterval(() => {
      this.renewing ??= this.renew()
        .catch(() => {})
        .finally(() => {
          this.renewing = undefined;
        });
    }, this.o.renewEveryMs);
  }

  /** Polls until the lease is free, then takes it. */
  async waitToAcquire(signal?: AbortSignal): Promise<void> {
    for (;;) {
      signal?.throwIfAborted();
      try {
        return await this.acquire();
      } catch (err) {
        if (!(err instanceof LeaseError)) throw err;
        if (err.code === 'LEASE_UNAVAILABLE')
          this.deps.log.warn({ err: err.message }, 'lease unreachable; retrying');
      }
      await sleep(this.o.pollMs);
    }
  }

  /** Whether renewals went unanswered past the margin: the lease may still be regained. */
  get lapsed(): boolean {
    return this.held && this.lapsedAt !== undefined;
  }

  /**
   * Renews once (the timer does it every `renewEveryMs`); rejects with LEASE_LOST if another holds
   * it now, LEASE_UNAVAILABLE without an answer. A refused compare-and-swap with this TRE's value
   * still there (an earlier renewal's answer was lost), or with no value (expired while lapsed),
   * takes the lease back.
   */
  async renew(): Promise<void> {
    if (!this.held)
      throw new LeaseError('LEASE_LOST', `shard ${this.deps.shard}'s lease is not held by this TRE`);
    const kv = await this.bucket();
    const sentAt = performance.now();
    try {
      try {
        this.revision = await kv.update(KEY, this.instanceId, this.revision);
      } catch (err) {
        if (!(err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE)) throw err;
        const current = await kv.get(KEY);
        if (current && current.operation === 'PUT' && current.string() === this.instanceId)
          this.revision = await kv.update(KEY, this.instanceId, current.revision);
        else if (current && current.operation === 'PUT') throw err;
        else if (this.deps.mayRegain && !(await this.deps.mayRegain())) throw err;
        else this.revision = await kv.create(KEY, this.instanceId); // refused if another created it first
      }
    } catch (err) {
      if (err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE) {
        this.lose('taken');
        throw new LeaseError('LEASE_LOST', `shard ${this.deps.shard}'s lease was taken by another TRE`, err);
      }
      this.deps.log.warn({ err: (err as Error).message }, 'lease renewal unanswered; retrying');
      throw new LeaseError(
        'LEASE_UNAVAILABLE',
        `cannot renew shard ${this.deps.shard}'s lease: ${(err as Error).message}`,
        err,
      );
    }
    if (this.held) this.extend(sentAt);
  }

  /** Valid until `margin` before the TTL from `sentAt` (when the write that set it left). */
  private extend(sentAt: number): void {
    const until = sentAt + this.o.ttlMs - this.o.marginMs;
    if (until <= performance.now()) return; // answered too late to count (held up): still lapsed
    this.validUntil = until;
    clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(() => this.lapse(), this.validUntil - performance.now());
    if (this.lapsedAt === undefined) return;
    const lapsedMs = Math.round(performance.now() - this.lapsedAt);
    this.lapsedAt = undefined;
    clearTimeout(this.giveUpTimer);
    this.deps.log.warn({ shard: this.deps.shard, lapsedMs }, 'shard lease regained');
    this.deps.onLapsed?.(false);
  }

  /** Renewals went unanswered past the margin: step back, keep trying until `regainWithinMs`. */
  private lapse(): void {
    if (!this.held || this.lapsedAt !== undefined) return;
    if (this.deps.nats.isClosed()) {
      this.lose('expired');
      return;
    }
    this.lapsedAt = performance.now();
    this.deps.log.warn(
      { shard: this.deps.shard, regainWithinMs: this.o.regainWithinMs },
      'shard lease lapsed (renewals unanswered): regaining it when JetStream answers, unless another TRE took it',
    );
    this.deps.onLapsed?.(true);
    this.giveUpTimer = setTimeout(() => this.lose('expired'), this.o.regainWithinMs);
  }

  private lose(why: LeaseLoss): void {
    if (!this.held) return;
    this.stop();
    this.deps.log.error(
      { shard: this.deps.shard, why },
      'shard lease lost: this TRE must stop acknowledging',
    );
    this.deps.onLost(why);
  }

  /** Stops renewing, without releasing (the lease then expires, as after a crash). */
  stop(): void {
    this.held = false;
    this.lapsedAt = undefined;
    clearInterval(this.renewTimer);
    clearTimeout(this.expiryTimer);
    clearTimeout(this.giveUpTimer);
  }

  /** Stops renewing and deletes the holder (only if it is still this TRE's), so a standby takes over now. */
  async release(): Promise<void> {
    if (!this.held) return;
    this.stop();
    await this.renewing;
    const kv = await this.bucket();
    await kv.delete(KEY, { previousSeq: this.revision }).catch((err: unknown) => {
      this.deps.log.warn({ err: (err as Error).message }, 'lease not released; it expires by itself');
    });
  }
}
