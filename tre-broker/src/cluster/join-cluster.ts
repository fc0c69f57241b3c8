/**
 * One TRE joining a cluster of shards (issue 21): its NATS connection (mutual TLS with its own TRE
 * certificate, its inbox prefix), its sealed link to the other attested shards (shard-link.ts) and
 * the ShardCluster its flows see (where households live comes from its registry). Sends wait until
 * the link runs: `start` comes once every flow registered its handlers, so nothing another shard
 * sends finds this one without a handler.
 */
import { type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { AttestationPolicy, Evidence } from '@tre/protocol';
import { shardSubjects } from '@tre/protocol';
import type { Logger } from '../log.js';
import type { HouseholdRegistry } from '../registry/household-registry.js';
import { TreConfigError } from '../tre-config-error.js';
import type { PeerTrust } from './peer-verification.js';
import type { ShardCluster } from './shard-cluster.js';
import type { ShardJournalOptions } from './shard-journal.js';
import type { ShardLeaseOptions } from './shard-lease.js';
import { ShardLink } from './shard-link.js';

export interface ClusterOptions {
  /** This TRE's shard: its certificate must name it (`urn:tre:tre:<shard>`). */
  shard: string;
  /** Every shard of the cluster, this one included (the same list on every shard). */
  shards: string[];
  /** NATS servers, e.g. `nats://127.0.0.1:4222` (several: the client fails over between them). */
  servers: string[];
  /** The regulator-signed whitelist every peer's quote must satisfy (checked by the caller). */
  peerPolicy: AttestationPolicy;
  /**
   * Failover between the TREs of this shard (shard-failover.ts), when an admin made the shard's
   * journal stream and lease bucket (`ensureShardStreams`); without them the TRE runs alone.
   * Without this option (in process) the TRE does not look for them: no JetStream traffic at all.
   */
  failover?: {
    /** The lease bucket's TTL, as given to `ensureShardStreams` (default 10 s). */
    leaseTtlMs?: number;
    /** Told the role once it is decided (a standby is told again when it takes over). */
    onRole?: (role: 'primary' | 'standby') => void;
    /** Called when the primary lost its lease (default: the TRE stops; `tre start` then exits non-zero). */
    onLeaseLost?: (why: 'taken' | 'expired') => void;
    /** Aborts a standby's wait for the lease. */
    signal?: AbortSignal;
    /** Tuning (tests). */
    journal?: ShardJournalOptions;
    lease?: Omit<ShardLeaseOptions, 'ttlMs'>;
  };
}

export interface JoinedCluster {
  cluster: ShardCluster;
  link: ShardLink;
  nats: NatsConnection;
  /** How peers (and this shard's other TREs) are attested: the regulator's root, CRL and whitelist. */
  trust: PeerTrust;
  /** Starts the link (answers peers, receives); call once every handler is registered. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function joinCluster(deps: {
  options: ClusterOptions;
  tls: { cert: string; key: string; ca: string };
  /** The regulator's CRL file (read on every peer attestation). */
  crlFile: string;
  signingKey: KeyObject;
  /** Where households live (read lazily: a standby wires its registry only when it takes over). */
  registry: Pick<HouseholdRegistry, 'shardOf' | 'shardsWithHouseholds'>;
  evidence: (nonce: Buffer) => Promise<Evidence>;
  log: Logger;
}): Promise<JoinedCluster> {
  const { options, tls, log } = deps;
  const { shard } = options;
  const shards = [...new Set([...options.shards, shard])].sort();
  const named = new X509Certificate(tls.cert).subjectAltName?.split(', ') ?? [];
  if (!named.includes(`URI:urn:tre:tre:${shard}`))
    throw new TreConfigError(
      `this TRE's certificate does not name shard ${shard} (urn:tre:tre:${shard}): a shard's certificate is issued for its name (\`tre enroll tls --tre-id ${shard}\`, signed with \`tre pki sign-csr --role tre\`)`,
    );
  const nats = await connect({
    servers: options.servers,
    name: `tre-${shard}`,
    tls: { cert: tls.cert, key: tls.key, ca: tls.ca },
    inboxPrefix: shardSubjects.inboxPrefix(shard),
    maxReconnectAttempts: -1,
    // A lost NATS node must cost less than the shard's lease (renewed every third of its TTL):
    // try the other servers at once, and notice a dead connection within seconds.
    reconnectTimeWait: 250,
    pingInterval: 2_000,
    maxPingOut: 2,
  }).catch((err: Error) => {
    throw new TreConfigError(
      `cannot reach NATS at ${options.servers.join(', ')} (${err.message}): start the cluster's nats-server (\`tre cluster\` for development) and check --nats; its users map this TRE's certificate (urn:tre:tre:${shard})`,
    );
  });
  const trust: PeerTrust = {
    regulatorRoot: new X509Certificate(tls.ca),
    regulatorCrl: () => readFileSync(deps.crlFile, 'utf8'),
    policy: options.peerPolicy,
  };
  const link = new ShardLink({
    nats,
    shard,
    roster: shards,
    treCertificate: tls.cert,
    signingKey: deps.signingKey,
    evidence: deps.evidence,
    trust,
    log: log.child({ module: 'shard-link' }),
  });
  let running: () => void = () => {};
  const started = new Promise<void>((resolve) => {
    running = resolve;
  });
  const cluster: ShardCluster = {
    shard,
    shards,
    shardOf: (meterId) => deps.registry.shardOf(meterId),
    shardsWithHouseholds: () => deps.registry.shardsWithHouseholds(),
    send: async (to, kind, body) => {
      await started;
      return link.send(to, kind, body);
    },
    on: (kind, handler) => link.on(kind, handler),
  };
  return {
    cluster,
    link,
    nats,
    trust,
    async start() {
      await link.start();
      running();
      log.info({ shard, shards }, 'shard of a cluster: linked to the other shards over NATS');
    },
    async stop() {
      await link.stop();
      await nats.drain().catch(() => nats.close());
    },
  };
}
