/**
 * How `startTre` takes its shard in a cluster with failover (issue 21): the store gets the flows'
 * migrations, then the shard's failover (shard-failover.ts) decides whether this TRE is the
 * primary; a standby waits here, following the journal, until it takes the lease over. `startTre`
 * wires its flows and listens for MQTT only after this resolves, so only the primary serves.
 * Without the shard's journal stream (no admin made it) the TRE runs alone, as before.
 */
import type { KeyObject } from 'node:crypto';
import type { Evidence } from '@tre/protocol';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import type { ClusterOptions, JoinedCluster } from './join-cluster.js';
import { ShardFailover } from './shard-failover.js';
import type { LeaseLoss } from './shard-lease.js';

/** The lease TTL when `--lease-ttl` is not given (the bucket's, set by `ensureShardStreams`). */
export const DEFAULT_LEASE_TTL_MS = 10_000;

export interface TakenShard {
  failover: ShardFailover;
  /** Whether this TRE started as the primary or became it after standing by. */
  became: 'primary at start' | 'primary by takeover';
  /** A standby's takeover: from taking the lease to writing the journal (ms). */
  takeoverMs?: number;
}

export async function takeShard(deps: {
  shard: string;
  joined: JoinedCluster;
  store: Store;
  tls: { cert: string };
  signingKey: KeyObject;
  attestation: { service: { evidence(nonce: Buffer): Promise<Evidence> } };
  options: NonNullable<ClusterOptions['failover']>;
  /** Runs the flows' migrations on the store without starting anything. */
  migrate: () => void;
  /** The TRE's own reaction to a lost lease (stop acknowledging), before `options.onLeaseLost`. */
  onLost: (why: LeaseLoss) => void;
  log: Logger;
}): Promise<TakenShard | undefined> {
  const { shard, options } = deps;
  const log = deps.log.child({ module: 'failover', shard });
  const failover = new ShardFailover({
    nats: deps.joined.nats,
    store: deps.store,
    me: {
      shard,
      certificate: deps.tls.cert,
      signingKey: deps.signingKey,
      evidence: (nonce) => deps.attestation.service.evidence(nonce),
    },
    trust: deps.joined.trust,
    options: {
      leaseTtlMs: options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS,
      journal: options.journal,
      lease: options.lease,
    },
    onLost: (why) => {
      deps.onLost(why);
      options.onLeaseLost?.(why);
    },
    log,
  });
  if (!(await failover.journaled())) {
    log.warn(
      'no journal stream for this shard: running without failover (an admin creates it: ensureShardStreams)',
    );
    return undefined;
  }
  deps.migrate();
  const role = await failover.start(options.signal);
  options.onRole?.(role);
  if (role === 'primary') {
    log.info('this TRE is the primary of its shard (it holds the lease)');
    return { failover, became: 'primary at start' };
  }
  log.info('this TRE is a standby of its shard: following the journal until the lease is free');
  const takeoverMs = await failover.takeOver(options.signal);
  log.info({ takeoverMs: Math.round(takeoverMs) }, 'took the shard over: this TRE is now its primary');
  options.onRole?.('primary');
  return { failover, became: 'primary by takeover', takeoverMs };
}
