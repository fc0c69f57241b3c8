/** What every flow of the TRE is built from; each service's dependencies pick from it. */
import type { KeyObject } from 'node:crypto';
import type { Clock } from '@tre/protocol';
import type { MessageRouter, Outbound } from './broker/message-router.js';
import type { ShardCluster } from './cluster/shard-cluster.js';
import type { Logger } from './log.js';
import type { HouseholdRegistry } from './registry/household-registry.js';
import type { Store } from './store/store.js';

export interface FlowBase {
  store: Store;
  registry: HouseholdRegistry;
  router: MessageRouter;
  /** Publishes from the TRE (broadcasts, provider topics); inbox replies go through `router.reply`. */
  outbound: Outbound;
  clock: Clock;
  log: Logger;
  /** The TRE's signing key (its TLS key): signs broadcasts, statements, bills, DR outcomes. */
  signingKey: KeyObject;
  /** The other shards, when this TRE is one shard of a cluster (issue 21); undefined for a single TRE. */
  cluster?: ShardCluster;
}
