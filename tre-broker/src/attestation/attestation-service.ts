/**
 * Answers attestation requests (paper IV) on the requester's `inbox/attestation`.
 * Nonces arriving within a short window (20 ms) form one Merkle tree; one TPM quote signs
 * SHA-256(root || SHA-256(TLS public key)), and each requester gets its inclusion proof, so one quote
 * serves thousands of verifiers. If the TPM is unavailable the answer says so (`unavailable`).
 * Other shards attest this TRE over NATS (cluster/shard-link.ts): `evidence(nonce)` joins the same
 * batch, so one quote serves MQTT requesters and shards alike.
 */
import { X509Certificate } from 'node:crypto';
import {
  type AttestationResponse,
  attestationRequestSchema,
  decodePayload,
  type Evidence,
  type MeasurementEvent,
  merkleBatch,
  PROTOCOL_VERSION,
  qualifyingData,
  tlsKeyHash,
} from '@tre/protocol';
import type { PeerIdentity } from '../access/peer-identity.js';
import {
  type HandlerResult,
  type InboundMessage,
  type MessageRouter,
  refusalOf,
} from '../broker/message-router.js';
import type { Logger } from '../log.js';

/** A quote over the application PCRs with the given qualifying data (the TPM, through hardware/). */
export interface QuoteSource {
  quote(
    qualifyingData: Buffer,
  ): Promise<{ attest: Buffer; signature: Buffer; pcrs: { index: number; sha256: string }[] }>;
}

export interface AttestationDeps {
  router: MessageRouter;
  log: Logger;
  /** PEM of the TRE's TLS certificate: its key is bound into every quote. */
  treCertificate: string;
  source: QuoteSource;
  /** The measurement log as of the quote (it grows when code is mapped after start). */
  eventLog: () => MeasurementEvent[];
  akCertificate: string;
}

/** A nonce waiting for the next quote: answered over MQTT, or settled in process (`evidence`). */
type Waiting =
  | { via: 'mqtt'; to: PeerIdentity; requestId: string; nonce: Buffer }
  | { via: 'local'; nonce: Buffer; resolve: (evidence: Evidence) => void; reject: (err: Error) => void };

/** `evidence` rejects with this when the TPM quote failed (`code` says so; retry later). */
export class AttestationUnavailableError extends Error {
  override readonly name = 'AttestationUnavailableError';
  readonly code = 'ATTESTATION_UNAVAILABLE';
}

export class AttestationService {
  private batch: Waiting[] = [];
  private scheduled = false;
  /** One quote at a time (the TPM runs one command): requests arriving meanwhile form the next batch. */
  private quoting: Promise<void> = Promise.resolve();
  private keyHash: Buffer = Buffer.alloc(0);
  readonly stats = { requests: 0, quotes: 0, failures: 0 };

  constructor(
    private readonly deps: AttestationDeps,
    private readonly opts: { maxBatch?: number; batchWindowMs?: number } = {},
  ) {}

  start(): void {
    this.keyHash = tlsKeyHash(new X509Certificate(this.deps.treCertificate));
    this.deps.router.on('attest', (msg) => this.handle(msg));
  }

  /**
   * Evidence over `nonce` (any bytes, e.g. a shard's hash of a verifier's nonce and its key),
   * from the next batch's quote; rejects with AttestationUnavailableError when the TPM quote fails.
   */
  evidence(nonce: Buffer): Promise<Evidence> {
    if (this.keyHash.length === 0) this.keyHash = tlsKeyHash(new X509Certificate(this.deps.treCertificate));
    return new Promise<Evidence>((resolve, reject) => {
      this.stats.requests++;
      this.enqueue({ via: 'local', nonce: Buffer.from(nonce), resolve, reject });
    });
  }

  private async handle(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, attestationRequestSchema);
    if (!decoded.ok) return refusalOf(decoded);
    this.stats.requests++;
    this.enqueue({
      via: 'mqtt',
      to: msg.from,
      requestId: decoded.value.requestId,
      nonce: Buffer.from(decoded.value.nonce, 'base64url'),
    });
    return undefined; // the answer is the attestation response itself
  }

  private enqueue(waiting: Waiting): void {
    this.batch.push(waiting);
    if (this.batch.length >= (this.opts.maxBatch ?? 65_536)) this.enqueueFlush();
    else if (!this.scheduled) {
      // A short real-time window coalesces requests arriving together over the network. It is
      // transport latency, not a domain rule, so it does not follow the (possibly simulated) clock.
      this.scheduled = true;
      setTimeout(() => this.enqueueFlush(), this.opts.batchWindowMs ?? 20);
    }
  }

  /** Resolves once the quote being taken (if any) and its answers are done: before the TPM closes. */
  async stop(): Promise<void> {
    await this.quoting;
  }

  private enqueueFlush(): void {
    this.quoting = this.quoting
      .then(() => this.flush())
      .catch((err: Error) => this.deps.log.error({ err: err.message }, 'attestation answers failed'));
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    try {
      await this.answer(batch);
    } catch (err) {
      // Whatever went wrong, no in-process requester waits forever (settled ones ignore this).
      for (const w of batch) if (w.via === 'local') w.reject(err as Error);
      throw err;
    }
  }

  private async answer(batch: Waiting[]): Promise<void> {
    const { root, proofs } = merkleBatch(batch.map((w) => w.nonce));
    let quote: Awaited<ReturnType<QuoteSource['quote']>> | undefined;
    let failure: string | undefined;
    let eventLog: MeasurementEvent[] = [];
    try {
      quote = await this.deps.source.quote(qualifyingData(root, this.keyHash));
      eventLog = [...this.deps.eventLog()]; // as of this quote: the log grows when code is mapped later
      this.stats.quotes++;
    } catch (err) {
      this.stats.failures++;
      failure = (err as Error).message;
      this.deps.log.error({ err: failure, batch: batch.length }, 'attestation unavailable: TPM quote failed');
    }
    await Promise.all(
      batch.map((w, i) => {
        const proof = proofs[i]!;
        const evidence: Evidence | undefined = quote && {
          attest: quote.attest.toString('base64'),
          signature: quote.signature.toString('base64'),
          pcrs: quote.pcrs,
          eventLog,
          akCertificate: this.deps.akCertificate,
          tlsKeyHash: this.keyHash.toString('hex'),
          batch: {
            root: root.toString('hex'),
            leafIndex: proof.leafIndex,
            leafCount: proof.leafCount,
            siblings: proof.siblings.map((s) => s.toString('hex')),
          },
        };
        if (w.via === 'local') {
          if (evidence) w.resolve(evidence);
          else
            w.reject(
              new AttestationUnavailableError(`the TRE cannot reach its TPM (${failure}); retry later`),
            );
          return undefined;
        }
        const response: AttestationResponse = evidence
          ? { v: PROTOCOL_VERSION, requestId: w.requestId, status: 'ok', evidence }
          : {
              v: PROTOCOL_VERSION,
              requestId: w.requestId,
              status: 'unavailable',
              message: 'the TRE cannot reach its TPM; retry later',
            };
        return this.deps.router.reply(w.to, 'attestation', response);
      }),
    );
  }
}
