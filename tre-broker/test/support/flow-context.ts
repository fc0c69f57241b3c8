/** Test support: the TRE's flows on a temp-dir store and a manual clock, without any network. */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Identity, ManualClock, type ParsedTopic, parseTopic } from '@tre/protocol';
import {
  createLogger,
  type FlowBase,
  type FlowOptions,
  type Flows,
  HouseholdRegistry,
  MessageRouter,
  type PeerIdentity,
  wireFlows,
} from '@tre/tre-broker';
import { developmentDataKey } from '../../src/attestation/tre-enrollment.js';
import { relayedOutbound, relayProviders } from '../../src/cluster/provider-relay.js';
import type { ShardCluster } from '../../src/cluster/shard-cluster.js';
import { Store } from '../../src/store/store.js';

export interface Published {
  topic: string;
  payload: string;
  retain: boolean;
  /** The TRE clock when it was published. */
  at: number;
}

/** The fixed data key of test stores (32 bytes, as the TRE's; never a real one). */
export function testDataKey(): Buffer {
  return Buffer.from('7e57da7a6b3e7000000000000000000000000000000000000000000000000017', 'hex');
}

/**
 * The store of a development TRE's data directory (no TPM) as `tre start` opens it: encrypted under
 * `<data>/data-key.development-only`, which is made when missing (a TRE started later uses it too).
 */
export async function developmentStore(dataDir: string): Promise<Store> {
  return Store.openIn(dataDir, { dataKey: (await developmentDataKey(dataDir)).key });
}

/**
 * `durable`: a real SQLite file in a temp dir, encrypted under `testDataKey()`; otherwise in memory
 * (fast, for property tests).
 */
export function flowContext(
  startMs: number,
  opts: {
    durable?: boolean;
    /** One shard of a cluster (support/memory-cluster.ts), made over this context's registry. */
    cluster?: (registry: HouseholdRegistry) => ShardCluster;
    /** This shard's name (with `cluster`). */
    shard?: string;
    clock?: ManualClock;
  } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), 'tre-flow-'));
  const store = opts.durable ? Store.openIn(dir, { dataKey: testDataKey() }) : new Store(':memory:');
  const published: Published[] = [];
  const local = {
    async publish(topic: string, payload: string | Buffer, opts: { retain?: boolean } = {}) {
      published.push({ topic, payload: payload.toString(), retain: !!opts.retain, at: ctx.clock.now() });
    },
  };
  const log = createLogger({ level: 'silent' });
  const tre = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  /** What one run of the TRE makes over its store: registry, cluster link, outbound, router. */
  const run = () => {
    const registry = new HouseholdRegistry(store, undefined, opts.shard);
    const cluster = opts.cluster?.(registry);
    const outbound = cluster ? relayedOutbound(local, cluster) : local;
    const router = new MessageRouter(outbound, log);
    if (cluster) relayProviders({ cluster, router, local, log });
    return { registry, cluster, outbound, router };
  };
  const ctx: FlowBase = {
    store,
    ...run(),
    clock: opts.clock ?? new ManualClock(startMs),
    log,
    signingKey: tre.privateKey,
  };
  return {
    ctx,
    /** Every flow wired to this context and started, as in a running TRE. */
    flows(opts: FlowOptions = {}) {
      const flows = wireFlows(ctx, opts);
      flows.start();
      return flows;
    },
    /**
     * This TRE restarted on the same store (as a standby that replayed the shard's journal takes
     * it over): `old` stopped, then a new registry, cluster link and router (`ctx` holds them;
     * parties send through the new router), every flow wired again and started.
     */
    async restart(old: Flows, flowOpts: FlowOptions = {}) {
      await old.stop();
      Object.assign(ctx, run());
      return this.flows(flowOpts);
    },
    clock: ctx.clock as ManualClock,
    published,
    trePublicKey: tre.publicKey,
    /** A party with its own key pair, for signing what it sends. */
    party(who: Identity) {
      const keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const from = { ...who, serial: '1', publicKey: keys.publicKey } as PeerIdentity;
      return {
        from,
        privateKey: keys.privateKey,
        /**
         * Routes a message as the broker would after the access matrix allowed it; returns the
         * receipt it got, or, for a message accepted by its PUBACK alone (readings), the answer the
         * PUBACK stands for (`{status: 'accepted'}`, `duplicate` for a resend).
         */
        async send(topic: string, body: unknown) {
          const parsed = parseTopic(topic) as Extract<ParsedTopic, { scope: 'party' }>;
          const inbox = `tre/v1/${who.role}/${who.id}/inbox/receipt`;
          const before = published.length;
          const result = await ctx.router.route({
            from,
            topic: parsed,
            payload: Buffer.from(JSON.stringify(body)),
          });
          // Its own receipt (by requestId when it has one: concurrent sends share `published`).
          const requestId = (body as { requestId?: unknown } | null)?.requestId;
          const receipt = published
            .slice(before)
            .findLast(
              (p) =>
                p.topic === inbox &&
                (typeof requestId !== 'string' ||
                  (JSON.parse(p.payload) as { requestId?: string }).requestId === requestId),
            );
          const answer = receipt ? JSON.parse(receipt.payload) : { v: 1, family: parsed.family, ...result };
          return answer as { status: string; reason?: string; message?: string; duplicate?: boolean };
        },
      };
    },
    close() {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
