/**
 * Answers attestation requests (paper IV) on the requester's `inbox/attestation`.
 * Nonces arriving within a short window (20 ms) form one Merkle tree; one TPM quote signs
 * SHA-256(root || SHA-256(TLS public key)), and each requester gets its inclusion proof, so one quote
 * serves thousands of verifiers. If the TPM is unavailable the answer says so (`unavailable`).
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

interface Waiting {
  to: PeerIdentity;
  requestId: string;
  nonce: Buffer;
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

  private async handle(msg: InboundMessage): Promise<HandlerResult> {
    const decoded = decodePayload(msg.payload, attestationRequestSchema);
    if (!decoded.ok) return refusalOf(decoded);
    this.stats.requests++;
    this.batch.push({
      to: msg.from,
      requestId: decoded.value.requestId,
      nonce: Buffer.from(decoded.value.nonce, 'base64url'),
    });
    if (this.batch.length >= (this.opts.maxBatch ?? 65_536)) this.enqueueFlush();
    else if (!this.scheduled) {
      // A short real-time window coalesces requests arriving together over the network. It is
      // transport latency, not a domain rule, so it does not follow the (possibly simulated) clock.
      this.scheduled = true;
      setTimeout(() => this.enqueueFlush(), this.opts.batchWindowMs ?? 20);
    }
    return undefined; // the answer is the attestation response itself
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
    const { root, proofs } = merkleBatch(batch.map((w) => w.nonce));
    let quote: Awaited<ReturnType<QuoteSource['quote']>> | undefined;
    let failure: string | undefined;
    let eventLog: MeasurementEvent[] = [];
    try {
      quote = await this.deps.source.quote(qualifyingData(root, this.keyHash));
      eventLog = this.deps.eventLog();
      this.stats.quotes++;
    } catch (err) {
      this.stats.failures++;
      failure = (err as Error).message;
      this.deps.log.error({ err: failure, batch: batch.length }, 'attestation unavailable: TPM quote failed');
    }
    await Promise.all(
      batch.map((w, i) => {
        const proof = proofs[i]!;
        const response: AttestationResponse = quote
          ? {
              v: PROTOCOL_VERSION,
              requestId: w.requestId,
              status: 'ok',
              evidence: {
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
              } satisfies Evidence,
            }
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
