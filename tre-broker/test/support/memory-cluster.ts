/**
 * Test support: shards of a cluster in one process, joined in memory instead of NATS (the sealed
 * link has its own tests: shard-link.test.ts, shards-nats.test.ts). Each body is JSON round-tripped
 * and handled on a later tick, as over the network; `crossed` keeps every message for privacy
 * scans, and `settled()` waits until no message is in flight.
 */
import type { HouseholdRegistry } from '@tre/tre-broker';
import type { ShardCluster, ShardMessageHandler } from '../../src/cluster/shard-cluster.js';

export interface Crossed {
  from: string;
  to: string;
  kind: string;
  body: string;
}

export function memoryCluster(names: readonly string[]) {
  const shards = [...names].sort();
  const handlers = new Map<string, Map<string, ShardMessageHandler>>(shards.map((s) => [s, new Map()]));
  const crossed: Crossed[] = [];
  const inFlight = new Set<Promise<void>>();
  /** Shards cut off: nothing they send or are sent arrives (a late or missing shard). */
  const down = new Set<string>();
  const errors: Error[] = [];

  function deliver(from: string, to: string, kind: string, body: unknown): Promise<void> {
    const text = JSON.stringify(body);
    crossed.push({ from, to, kind, body: text });
    if (down.has(to) || down.has(from)) return Promise.resolve();
    const handler = handlers.get(to)?.get(kind);
    if (!handler) return Promise.reject(new Error(`shard ${to} has no handler for ${kind}`));
    const done = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => handler(from, JSON.parse(text)))
      .catch((err: Error) => {
        errors.push(err);
      })
      .finally(() => inFlight.delete(done));
    inFlight.add(done);
    return Promise.resolve();
  }

  return {
    crossed,
    down,
    errors,
    /**
     * The ShardCluster of one shard, made over its registry (where households live, its own view).
     * Made again for the same shard: that shard restarted, the handlers of its earlier run are gone.
     */
    shard: (shard: string) => (registry: Pick<HouseholdRegistry, 'shardOf' | 'shardsWithHouseholds'>) => {
      handlers.set(shard, new Map());
      const cluster: ShardCluster = {
        shard,
        shards,
        shardOf: (m) => registry.shardOf(m),
        shardsWithHouseholds: () => registry.shardsWithHouseholds(),
        send: (to, kind, body) => deliver(shard, to, kind, body),
        on: (kind, handler) => {
          const own = handlers.get(shard)!;
          if (own.has(kind)) throw new Error(`a handler for ${kind} is already registered`);
          own.set(kind, handler);
        },
      };
      return cluster;
    },
    /** Resolves once every message sent (and every message those handlers sent) was handled. */
    async settled(): Promise<void> {
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    },
  };
}

/** `n` households spread round-robin over the shards (h0 in the first, h1 in the second, ...), DNO d1, supplier sup1. */
export function spreadHouseholds(n: number, shards: readonly string[]) {
  return Array.from({ length: n }, (_, i) => ({
    meterId: `h${i}`,
    supplierId: 'sup1',
    dnoId: 'd1',
    capacityW: 8_000,
    account: `acc-h${i}`,
    shard: shards[i % shards.length]!,
  }));
}
