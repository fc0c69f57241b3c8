/**
 * The TRE's public surface: start a TRE, run its PKI and enrollment, register households, compute
 * its measurement. Flow internals (store, ledger, tariff book, DR book) are not exported; the
 * in-process wiring for benchmarks is `wireFlows` with its `FlowBase`.
 */
export type { IdentityLimitOptions } from './access/identity-limits.js';
export { loggableIdentity, type PeerIdentity } from './access/peer-identity.js';
export { Measurement } from './attestation/measured-start.js';
export {
  APPLICATION_PCR,
  attestationPolicyFor,
  bootPcrsOf,
  copyRelease,
  eventOf,
  measuredComponents,
  productionPackages,
  replayPcr,
} from './attestation/measurement.js';
export { sealedFiles } from './attestation/sealed-secrets.js';
export {
  developmentDataKeyFile,
  enrollTls,
  provisionTre,
  resealForRelease,
} from './attestation/tre-enrollment.js';
export type { BillingOptions, BillingService } from './billing/billing-service.js';
export { MessageRouter, type Outbound } from './broker/message-router.js';
export type { ClusterOptions, JoinedCluster } from './cluster/join-cluster.js';
export {
  adminUser,
  type NatsCluster,
  type NatsNode,
  type NatsUser,
  natsServerTls,
  shardUser,
  startNatsCluster,
} from './cluster/nats-servers.js';
export type { ShardCluster } from './cluster/shard-cluster.js';
export type { ShardFailover, ShardRole } from './cluster/shard-failover.js';
export { ensureShardStreams } from './cluster/shard-journal.js';
export { DEFAULT_LEASE_TTL_MS, type TakenShard } from './cluster/take-shard.js';
export type {
  DemandResponseOptions,
  DemandResponseService,
} from './demand-response/demand-response-service.js';
export type { DrBook } from './demand-response/dr-book.js';
export { newPseudonym } from './demand-response/pseudonyms.js';
export { type FlowBase, type FlowOptions, type Flows, wireFlows } from './flows.js';
export type { ReadingIngest } from './ingest/reading-ingest.js';
export { ReadingStore } from './ingest/reading-store.js';
export { createLogger, type Logger } from './log.js';
export { DEFAULT_CONTRIBUTION_BOUND_WH, intervalBoundWh } from './monitoring/aggregate.js';
export { sampleDiscreteLaplace } from './monitoring/discrete-laplace.js';
export type { MonitoringOptions, MonitoringService } from './monitoring/monitoring-service.js';
export {
  AkChallenge,
  AkChallengeResponse,
  AkEnrollmentRequest,
  answerChallenge,
  certifyAk,
  challengeAk,
  endorseAk,
  enrollmentRequest,
} from './pki/ak-endorsement.js';
export {
  CertificateAuthority,
  type IssuedFiles,
  pkiPaths,
  type Validity,
} from './pki/certificate-authority.js';
export { HouseholdRegistry, RegistryError, registerHouseholds } from './registry/household-registry.js';
export { Store } from './store/store.js';
export { type RunningTre, startTre, type TreOptions } from './tre.js';
export { TreConfigError } from './tre-config-error.js';
