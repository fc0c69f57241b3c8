/**
 * The TRE process, the composition root: PKI material, revocation list, measured start, the mTLS
 * MQTT broker and the flows (flows.ts) wired to it, and attestation when there is a TPM.
 */
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Tpm } from '@tre/hardware';
import { type Clock, systemClock } from '@tre/protocol';
import type { IdentityLimitOptions } from './access/identity-limits.js';
import { AttestationService } from './attestation/attestation-service.js';
import { type Measurement, measuredStart } from './attestation/measured-start.js';
import { APPLICATION_PCR, bootPcrsOf } from './attestation/measurement.js';
import { developmentDataKey, developmentDataKeyFile } from './attestation/tre-enrollment.js';
import type { BillingOptions, BillingService } from './billing/billing-service.js';
import { MessageRouter } from './broker/message-router.js';
import { TlsMqttBroker } from './broker/tls-mqtt-broker.js';
import { type ClusterOptions, type JoinedCluster, joinCluster } from './cluster/join-cluster.js';
import { relayedOutbound, relayProviders } from './cluster/provider-relay.js';
import { type TakenShard, takeShard } from './cluster/take-shard.js';
import type {
  DemandResponseOptions,
  DemandResponseService,
} from './demand-response/demand-response-service.js';
import { wireFlows } from './flows.js';
import type { ReadingIngest } from './ingest/reading-ingest.js';
import type { ReadingStore } from './ingest/reading-store.js';
import type { Logger } from './log.js';
import { type ListenAddress, type MetricsServer, serveMetrics } from './metrics/metrics-server.js';
import { TreMetrics } from './metrics/tre-metrics.js';
import type { MonitoringOptions, MonitoringService } from './monitoring/monitoring-service.js';
import { pkiPaths } from './pki/certificate-authority.js';
import { RevocationList } from './pki/revocation-list.js';
import { HouseholdRegistry } from './registry/household-registry.js';
import type { RetentionService } from './retention/retention-service.js';
import { Store } from './store/store.js';
import { TreConfigError } from './tre-config-error.js';

export { TreConfigError };

export interface TreOptions {
  pkiDir: string;
  dataDir: string;
  host?: string;
  port?: number;
  log: Logger;
  revocationPollMs?: number;
  clock?: Clock;
  limits?: IdentityLimitOptions;
  handshakeTimeoutMs?: number;
  monitoring?: MonitoringOptions;
  billing?: BillingOptions;
  demandResponse?: DemandResponseOptions;
  /**
   * The TPM: measured start, attestation key, quotes (without it the TRE cannot be attested). The
   * AK certificate comes from `<data>/tpm/ak.crt` (enrolled with `tre enroll` and `tre pki
   * endorse-ak`) unless `akCertificate` enrolls in process (demo, tests). `bootPcrs`: on a machine
   * with measured boot, the PCRs its firmware and boot loader extend (e.g. 0-7); they are quoted
   * beside the application PCR and the TLS key is sealed to them too.
   */
  tpm?: { tcti: string; akCertificate?: (tpm: Tpm) => Promise<string>; bootPcrs?: number[] };
  /** What the TRE measures as its configuration (the regulator whitelists the same). */
  measuredConfig?: Record<string, unknown>;
  /** Where `/metrics`, `/healthz` and `/readyz` are served (metrics/metrics-server.ts); none without. */
  metrics?: ListenAddress;
  /** One shard of a cluster of TREs over NATS (issue 21); needs the TPM (the other shards attest it). */
  cluster?: ClusterOptions;
}

export interface RunningTre {
  host: string;
  port: number;
  broker: TlsMqttBroker;
  router: MessageRouter;
  store: Store;
  registry: HouseholdRegistry;
  readings: ReadingStore;
  ingest: ReadingIngest;
  monitoring: MonitoringService;
  billing: BillingService;
  demandResponse: DemandResponseService;
  /** Deletes what is no longer needed (retention/retention-rule.ts); `stats` counts what it deleted. */
  retention: RetentionService;
  attestation?: { service: AttestationService; tpm: Tpm; akPublicKeyPem: string; pcr: string };
  /** The metrics endpoint, when `metrics` asked for one. */
  metrics?: MetricsServer;
  /** This shard's link to the others, in a cluster. */
  cluster?: JoinedCluster;
  /** In a cluster whose shard has a journal: this TRE as the shard's primary (lease, journal, how it became primary). */
  shard?: TakenShard;
  stop(): Promise<void>;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    throw new TreConfigError(
      `cannot read the ${what} at ${path}: the TRE's directory holds the regulator's ca.crt and crl.pem and its own tre.crt (make the key and request with \`tre enroll tls\`, the regulator signs it with \`tre pki sign-csr --role tre\`)`,
    );
  }
}

export async function startTre(opts: TreOptions): Promise<RunningTre> {
  const paths = pkiPaths(opts.pkiDir);
  const tls = {
    key: '',
    cert: await readPem(paths.treCert, 'TRE certificate'),
    ca: await readPem(paths.caCert, 'regulator CA certificate'),
  };
  await readPem(paths.crl, 'certificate revocation list');
  const plainKey = await readFile(paths.treKey, 'utf8').catch(() => undefined);
  let tpm: Tpm | undefined;
  let measurement: Measurement | undefined;
  let dataKey: Buffer;
  const bootPcrs = bootPcrsOf(opts.tpm?.bootPcrs);
  if (opts.cluster && !opts.tpm)
    throw new TreConfigError(
      'a shard of a cluster needs its TPM (--tpm): the other shards attest it before sending it anything, and it them',
    );
  if (opts.tpm) {
    if (plainKey)
      throw new TreConfigError(
        `${paths.treKey} is a plaintext TRE key: with a TPM the TRE's keys exist only sealed (\`tre enroll tls\`); delete it from this machine`,
      );
    const measured = measuredStart(opts.tpm.tcti, opts.dataDir, opts.measuredConfig ?? {});
    ({ tpm, measurement } = measured);
    tls.key = measured.secrets.tlsKey;
    dataKey = measured.secrets.dataKey;
  } else {
    tls.key = await readPem(paths.treKey, 'TRE private key (development, no TPM)');
    const development = await developmentDataKey(opts.dataDir);
    dataKey = development.key;
    if (development.created)
      opts.log.warn(
        { file: developmentDataKeyFile(opts.dataDir) },
        'development mode (no TPM): the store is encrypted with an unsealed key file',
      );
  }
  if (!new X509Certificate(tls.cert).checkPrivateKey(createPrivateKey(tls.key))) {
    tpm?.close();
    throw new TreConfigError(
      `${paths.treCert} is not the certificate of this TRE's key: have the regulator sign the request \`tre enroll tls\` wrote (\`tre pki sign-csr --role tre\`) and put the certificate there`,
    );
  }
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const revocations = await RevocationList.load(paths.crl, tls.ca);
  const clock = opts.clock ?? systemClock;
  const store = Store.openIn(opts.dataDir, { dataKey });
  // In a cluster the registry is wired once this TRE is the shard's primary (from replayed data).
  let registry: HouseholdRegistry | undefined = opts.cluster
    ? undefined
    : new HouseholdRegistry(store, undefined, undefined);
  let attestation: RunningTre['attestation'];
  const joined =
    opts.cluster &&
    (await joinCluster({
      options: opts.cluster,
      tls,
      crlFile: paths.crl,
      signingKey: createPrivateKey(tls.key),
      registry: {
        shardOf: (meterId) => registry?.shardOf(meterId),
        shardsWithHouseholds: () => registry?.shardsWithHouseholds() ?? [],
      },
      evidence: (nonce) => attestation!.service.evidence(nonce),
      log: opts.log,
    }).catch((err: Error) => {
      store.close();
      tpm?.close();
      throw err;
    }));
  const broker = await TlsMqttBroker.start({
    admit: (who) => (who.role === 'meter' && !registry?.get(who.id) ? 'meter not registered' : undefined),
    tls,
    revocations,
    host: opts.host ?? '127.0.0.1',
    port: opts.port ?? 8883,
    log: opts.log,
    revocationPollMs: opts.revocationPollMs,
    limits: opts.limits,
    handshakeTimeoutMs: opts.handshakeTimeoutMs,
  });
  // In a cluster what goes to a provider is published by every shard (cluster/provider-relay.ts).
  const outbound = joined ? relayedOutbound(broker, joined.cluster) : broker;
  const router = new MessageRouter(outbound, opts.log.child({ module: 'router' }));
  broker.setRouter(router);
  const metrics = opts.metrics && new TreMetrics();
  if (tpm) {
    const akPublicKeyPem = tpm.publicKeyPem();
    const akCertificateFile = join(opts.dataDir, 'tpm', 'ak.crt');
    const akCertificate = opts.tpm?.akCertificate
      ? await opts.tpm.akCertificate(tpm)
      : await readFile(akCertificateFile, 'utf8').catch(() => {
          throw new TreConfigError(
            `no attestation-key certificate at ${akCertificateFile}: enroll this TPM's AK with the regulator (` +
              '`tre enroll request`, `tre pki endorse-ak challenge`, `tre enroll activate`, `tre pki endorse-ak certify`)',
          );
        });
    if (!createPublicKey(akPublicKeyPem).equals(new X509Certificate(akCertificate).publicKey))
      throw new TreConfigError(
        `${akCertificateFile} certifies another attestation key than this TPM's; enroll this TPM's AK`,
      );
    const quoted = [...bootPcrs, APPLICATION_PCR];
    const service = new AttestationService({
      router,
      log: opts.log.child({ module: 'attestation' }),
      treCertificate: tls.cert,
      source: {
        quote: async (qd: Buffer) => {
          // A library mapped since start is measured before the TPM quotes (a verifier refuses it).
          const added = measurement!.remeasure();
          if (added.length)
            opts.log.warn({ added: added.map((e) => e.description) }, 'code mapped after start measured');
          return metrics ? metrics.quote(() => tpm.quote(quoted, qd)) : tpm.quote(quoted, qd);
        },
      },
      eventLog: () => measurement!.events,
      akCertificate,
    });
    service.start();
    attestation = { service, tpm, akPublicKeyPem, pcr: tpm.pcrRead(APPLICATION_PCR).toString('hex') };
  }
  const base = { store, router, outbound, clock, log: opts.log, signingKey: createPrivateKey(tls.key) };
  const flowOptions = {
    monitoring: opts.monitoring,
    billing: opts.billing,
    demandResponse: opts.demandResponse,
  };
  // Failover when asked for (`tre start --cluster` always asks; in process, `cluster.failover`).
  const failover =
    joined &&
    opts.cluster!.failover &&
    (await takeShard({
      shard: opts.cluster!.shard,
      joined,
      store,
      tls,
      signingKey: createPrivateKey(tls.key),
      attestation: attestation!,
      options: opts.cluster!.failover,
      // The same migrations as the flows', before any replay (the journal carries rows, not schema).
      migrate: () => {
        wireFlows(
          {
            ...base,
            registry: new HouseholdRegistry(store, undefined, opts.cluster!.shard),
            router: new MessageRouter(outbound, opts.log.child({ module: 'router' })),
          },
          flowOptions,
        );
      },
      onLost: () => {
        // Stop acknowledging at once: meters reconnect to the shard's new primary.
        void broker.close().catch(() => {});
      },
      log: opts.log,
    }).catch(async (err: Error) => {
      await attestation?.service.stop();
      await broker.close();
      await joined.stop().catch(() => {});
      store.close();
      tpm?.close();
      throw err;
    }));
  registry ??= new HouseholdRegistry(store, undefined, opts.cluster?.shard);
  registry.serve(router);
  const flows = wireFlows({ ...base, registry, cluster: joined?.cluster }, flowOptions);
  if (joined) relayProviders({ cluster: joined.cluster, router, local: broker, log: opts.log });
  flows.start();
  await joined?.start(); // every handler is registered: other shards may send from now on
  let metricsServer: MetricsServer | undefined;
  if (metrics && opts.metrics) {
    metrics.watch({ broker, router, store, ...flows, attestation: attestation?.service, cluster: joined });
    metricsServer = await serveMetrics(opts.metrics, metrics);
    const { address: host, port } = metricsServer.address;
    opts.log.info({ host, port }, 'TRE metrics listening (HTTP: /metrics, /healthz, /readyz)');
  }
  // Only now is every flow wired: the line that says where to connect comes last.
  await broker.listen();
  const { address, port } = broker.address;
  opts.log.info({ host: address, port }, 'TRE listening (MQTT 3.1.1 over mutual TLS)');
  return {
    host: address,
    port,
    broker,
    router,
    store,
    registry,
    readings: flows.readings,
    ingest: flows.ingest,
    monitoring: flows.monitoring,
    billing: flows.billing,
    demandResponse: flows.demandResponse,
    retention: flows.retention,
    attestation,
    metrics: metricsServer,
    cluster: joined,
    shard: failover,
    async stop() {
      await flows.stop();
      await broker.close(); // nothing more is acknowledged
      await store.settled();
      await failover?.failover.stop(); // releases the lease: a standby takes over at once
      await joined?.stop();
      await attestation?.service.stop();
      attestation?.tpm.close();
      store.close();
      await metricsServer?.close(); // last: /readyz says not ready while the TRE stops
      opts.log.info('TRE stopped');
    },
  };
}
