/** @tre/protocol: the wire contract every party imports (topics, payload schemas, identities, signed content). */
export type { Alert } from './alert.js';
export {
  type AttestationPolicy,
  type AttestationResponse,
  attestationPolicySchema,
  attestationRequestSchema,
  attestationResponseSchema,
  type Evidence,
  type MeasurementEvent,
} from './attestation.js';
export {
  type Bill,
  billingPeriodRequestSchema,
  billSchema,
  type HouseholdStatement,
  householdStatementSchema,
  type PeriodLength,
  type Statement,
  statementAckSchema,
  statementSchema,
  type Tariff,
  tariffSchema,
} from './billing.js';
export {
  AcceleratedClock,
  type Clock,
  ManualClock,
  PendingTimers,
  systemClock,
  type TimerHandle,
} from './clock.js';
export {
  type Acceptance,
  acceptanceSchema,
  bidSchema,
  type Compliance,
  checkDrOutcome,
  complianceSchema,
  DR_OUTCOME_KINDS,
  type DrAnnouncement,
  type DrCancel,
  type DrEvent,
  type DrModify,
  type DrOutcome,
  type DrOutcomeCheck,
  type DrOutcomeKind,
  type DrOutcomeNotice,
  type DrOutcomeProof,
  type DrOutcomeRefusal,
  type DrOutcomeRoot,
  DrOutcomeVerifier,
  type DrOverride,
  type DrTerms,
  drAnnouncementSchema,
  drCancelSchema,
  drEventSchema,
  drModifySchema,
  drOutcomeLeaf,
  drOutcomeLeafHash,
  drOutcomeLeafJson,
  drOutcomeNoticeSchema,
  drOutcomeRootSchema,
  drOutcomeSchema,
  drOutcomeTree,
  drOverrideSchema,
  drTermsSchema,
  OUTCOMES_OF_KIND,
  type PseudoBids,
  pseudoBidsSchema,
} from './demand-response.js';
export {
  BASELINE_DAYS,
  BASELINE_FALLBACK_DAYS,
  BASELINE_LOOKBACK_DAYS,
  type BaselineInterval,
  baselineIntervals,
  comparableWindows,
} from './dr-baseline.js';
export {
  decodePayload,
  MAX_BULK_PAYLOAD_BYTES,
  type Receipt,
  type RefusalReason,
  receiptSchema,
  signedEnvelopeSchema,
} from './envelope.js';
export {
  type DiscoveryComponent,
  HOME_COMMANDS,
  HOME_STATES,
  type HomeCommand,
  type HomeState,
  homeNodeId,
  homeTopics,
} from './home-topics.js';
export {
  assertId,
  formatIdentity,
  ID_PATTERN,
  type Identity,
  isPartyRole,
  PARTY_ROLES,
  type PartyRole,
  parseIdentity,
} from './identity.js';
export { type InclusionProof, leafHash, merkleBatch, merkleRootFromProof, qualifyingData } from './merkle.js';
export {
  type Aggregate,
  aggregateSchema,
  groupsRequestSchema,
  type Household,
  householdSchema,
  type Reading,
  readingSchema,
} from './monitoring.js';
export { AK_CERTIFICATE_EKU, tlsKeyHash, verifyAttestation } from './quote-verifier.js';
export {
  DEFAULT_TARIFF_RULES,
  type RegistryUpdate,
  type RegulatorConfig,
  registryUpdateSchema,
  regulatorConfigSchema,
  type TariffRules,
  tariffRulesSchema,
} from './regulator.js';
export { checkShard, senderOf, shardPermissions, shardSubjects } from './shard-subjects.js';
export { SignatureError, type SignedType, signContent, verifyContent } from './signed-content.js';
export {
  allowedSubscriptions,
  filterCovers,
  type InboxKind,
  mayPublish,
  maySubscribe,
  type ParsedTopic,
  type PartyFamily,
  parseTopic,
  partyTopic,
  topics,
} from './topics.js';
export { makeCredential } from './tpm-credential.js';
export {
  hasAttributes,
  parseTpmPublic,
  TPM_ALG,
  TPM_ECC_NIST_P256,
  TPMA_OBJECT,
  type TpmPublic,
  tpmPublicKey,
} from './tpm-public.js';
export { encodeQuoteAttest, parseQuoteAttest, TPM_ALG_SHA256 } from './tpms-attest.js';
export { PROTOCOL_VERSION } from './version.js';
