/**
 * Routes an authorised publish on a party's `up` topic to the flow that owns its family and sends
 * the flow's receipt to the sender's `inbox/receipt`. A flow's handler commits what it accepts
 * before it returns, so the QoS1 PUBACK (sent after the handler) means committed.
 *
 * Families registered with `acceptedByPuback` (readings) get no receipt when accepted: the PUBACK
 * is the acceptance. A refusal still gets its receipt, and it is written to the sender's socket
 * before the PUBACK: `route()` resolves only after `reply()` resolved, and the broker's publish
 * resolves only once the receipt was written to every subscribed session (see TlsMqttBroker.publish),
 * while aedes writes the PUBACK after `authorizePublish` (which awaits `route()`) returns.
 */
import {
  type InboxKind,
  type ParsedTopic,
  type PartyFamily,
  PROTOCOL_VERSION,
  type Receipt,
  type RefusalReason,
  topics,
} from '@tre/protocol';
import type { PeerIdentity } from '../access/peer-identity.js';
import { loggableIdentity } from '../access/peer-identity.js';
import type { Logger } from '../log.js';

/** Thrown after the receipt when a message could not be committed: no PUBACK may follow. */
export class NotCommitted extends Error {
  override readonly name = 'NotCommitted';
  readonly code = 'NOT_COMMITTED';
}

export interface InboundMessage {
  from: PeerIdentity;
  topic: Extract<ParsedTopic, { scope: 'party' }>;
  payload: Buffer;
  /**
   * The shard the sender is connected to, when another shard replicated the message here
   * (cluster/provider-replication.ts); undefined when the sender is connected to this TRE.
   */
  via?: string;
}

/** What a handler answers: a receipt (without envelope fields), or nothing when it replies itself. */
export type HandlerResult =
  | { status: 'accepted'; requestId: string; duplicate?: boolean; message?: string }
  | { status: 'refused'; requestId: string; reason: RefusalReason; message: string }
  | undefined;

export type MessageHandler = (msg: InboundMessage) => Promise<HandlerResult>;

export interface HandlerOptions {
  /**
   * An accepted message (a duplicate included) gets no receipt: the PUBACK that follows the handler
   * is the acceptance. Refusals still get one, before the PUBACK.
   */
  acceptedByPuback?: boolean;
}

export type Refusal = Extract<HandlerResult, { status: 'refused' }>;

/** A refusal receipt: every refusal of every flow is built here. */
export function refusal(requestId: string, reason: RefusalReason, message: string): Refusal {
  return { status: 'refused', requestId, reason, message };
}

/** The refusal receipt for a payload that did not decode (`decodePayload`), echoing its requestId. */
export function refusalOf(failed: { reason: RefusalReason; message: string; requestId: string }): Refusal {
  return refusal(failed.requestId, failed.reason, failed.message);
}

export interface Outbound {
  /** Publishes from the TRE itself (bypasses the access matrix, which is for clients). */
  publish(topic: string, payload: string | Buffer, opts?: { retain?: boolean }): Promise<void>;
}

/** Passes an accepted message on to the other shards of a cluster (cluster/provider-replication.ts). */
export type Replicator = (msg: InboundMessage) => Promise<void>;

export class MessageRouter {
  private readonly handlers = new Map<PartyFamily, { handler: MessageHandler; opts: HandlerOptions }>();
  private replicator: Replicator | undefined;
  /** Messages being handled right now (the simulator waits for 0). */
  inFlight = 0;
  /** Refusal receipts sent, by reason (the TRE's metrics). */
  readonly refusals = new Map<RefusalReason, number>();

  constructor(
    private readonly outbound: Outbound,
    private readonly log: Logger,
  ) {}

  /**
   * In a cluster: every message this TRE's handler accepted from a party connected here is given to
   * `replicate` before its receipt (and PUBACK) go out. When it fails the sender gets no PUBACK and
   * resends (a duplicate here, passed on again). Replicated messages (`via` set) get no receipt.
   */
  replicateWith(replicate: Replicator): void {
    this.replicator = replicate;
  }

  on(family: PartyFamily, handler: MessageHandler, opts: HandlerOptions = {}): void {
    if (this.handlers.has(family)) throw new Error(`a handler for ${family} is already registered`);
    this.handlers.set(family, { handler, opts });
  }

  /**
   * Runs the family's handler and sends its receipt (none for an acceptance of an `acceptedByPuback`
   * family). Resolves with the handler's answer once the receipt was sent; rejects with NotCommitted
   * when no PUBACK may follow.
   */
  async route(msg: InboundMessage): Promise<HandlerResult> {
    this.inFlight++;
    try {
      return await this.dispatch(msg);
    } finally {
      this.inFlight--;
    }
  }

  private async dispatch(msg: InboundMessage): Promise<HandlerResult> {
    const entry = this.handlers.get(msg.topic.family);
    let result: HandlerResult;
    if (!entry) {
      result = refusal(requestIdOf(msg.payload), 'INTERNAL', `no service handles ${msg.topic.family} yet`);
    } else {
      try {
        result = await entry.handler(msg);
      } catch (err) {
        this.log.error({ err, family: msg.topic.family, ...loggableIdentity(msg.from) }, 'handler failed');
        // Echo the requestId: for a family accepted by the PUBACK, a refusal the sender cannot match
        // would leave the PUBACK after it looking like an acceptance.
        result = refusal(requestIdOf(msg.payload), 'INTERNAL', 'internal error; retry later');
      }
    }
    if (!result) return result;
    if (msg.via !== undefined) {
      // Replicated from the shard the sender is connected to: that shard sent the receipt.
      if (result.status === 'refused')
        this.log.warn(
          { family: msg.topic.family, reason: result.reason, via: msg.via },
          'replicated request refused here',
        );
      return result;
    }
    if (result.status === 'accepted' && this.replicator) {
      try {
        await this.replicator(msg);
      } catch (err) {
        this.log.error(
          { err: (err as Error).message, family: msg.topic.family },
          'not passed to the other shards',
        );
        result = refusal(
          result.requestId,
          'STORAGE_UNAVAILABLE',
          'accepted here but not yet passed to every shard of the cluster; resend (the resend is a duplicate here)',
        );
      }
    }
    if (result.status === 'accepted' && entry?.opts.acceptedByPuback) return result;
    if (result.status === 'refused') {
      this.refusals.set(result.reason, (this.refusals.get(result.reason) ?? 0) + 1);
      this.log.warn(
        { family: msg.topic.family, reason: result.reason, ...loggableIdentity(msg.from) },
        'request refused',
      );
    }
    const receipt: Receipt = { v: PROTOCOL_VERSION, family: msg.topic.family, ...result };
    await this.reply(msg.from, 'receipt', receipt);
    if (result.status === 'refused' && result.reason === 'STORAGE_UNAVAILABLE') {
      // Not committed, so not acknowledged: the broker closes the connection instead of sending the PUBACK.
      throw new NotCommitted(result.message);
    }
    return result;
  }

  /** Sends a refusal receipt without running the handler (e.g. rate limits). */
  async refuse(msg: InboundMessage, reason: RefusalReason, message: string): Promise<void> {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
    this.log.warn({ family: msg.topic.family, reason, ...loggableIdentity(msg.from) }, 'request refused');
    await this.reply(msg.from, 'receipt', {
      v: PROTOCOL_VERSION,
      family: msg.topic.family,
      ...refusal(requestIdOf(msg.payload), reason, message),
    } satisfies Receipt);
  }

  async reply(
    to: PeerIdentity | { role: PeerIdentity['role']; id: string },
    kind: InboxKind,
    body: unknown,
  ): Promise<void> {
    await this.outbound.publish(topics.inbox(to, kind), JSON.stringify(body));
  }
}

function requestIdOf(payload: Buffer): string {
  try {
    const id = (JSON.parse(payload.toString('utf8')) as { requestId?: unknown }).requestId;
    return typeof id === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(id) ? id : 'unknown';
  } catch {
    return 'unknown';
  }
}
