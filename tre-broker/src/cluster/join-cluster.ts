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
import type { ShardCluster } from './shard-cluster.js';
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
}

export interface JoinedCluster {
  cluster: ShardCluster;
  link: ShardLink;
  nats: NatsConnection;
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
  registry: HouseholdRegistry;
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
  }).catch((err: Error) => {
    throw new TreConfigError(
      `cannot reach NATS at ${options.servers.join(', ')} (${err.message}): start the cluster's nats-server (\`tre cluster\` for development) and check --nats; its users map this TRE's certificate (urn:tre:tre:${shard})`,
    );
  });
  const link = new ShardLink({
    nats,
    shard,
    roster: shards,
    treCertificate: tls.cert,
    signingKey: deps.signingKey,
    evidence: deps.evidence,
    trust: {
      regulatorRoot: new X509Certificate(tls.ca),
      regulatorCrl: () => readFileSync(deps.crlFile, 'utf8'),
      policy: options.peerPolicy,
    },
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
