/**
 * The reference DSM: raises signed demand-response events, clears the released pseudo-bids in
 * merit order and signs its acceptance (before the event's acceptBy), and records the compliance
 * reports. It may cancel or modify an event (signed, ordered by `issuedAt`); a modified event is a
 * new round under the same id (new bids, a new acceptance). Everything it learns is in `rounds`.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  type Acceptance,
  type Compliance,
  complianceSchema,
  type DrCancel,
  type DrEvent,
  type DrModify,
  type DrTerms,
  PROTOCOL_VERSION,
  type PseudoBids,
  parseTopic,
  pseudoBidsSchema,
  type Receipt,
  signContent,
  topics,
} from '@tre/protocol';
import type { IssuedFiles } from '@tre/tre-broker';
import { meritOrder } from './merit-order.js';
import type { PartyClient } from './party-client.js';

export interface Round {
  event: DrEvent;
  bids?: PseudoBids;
  accepted: string[];
  acceptedWh: number;
  /** Sum of accepted q x p, micro-minor units (what the DSM pays before compliance). */
  creditMicro: number;
  compliance?: Compliance;
  /** How often the DSM modified the event (its current revision). */
  revision: number;
  cancelled: boolean;
}

export class Dsm {
  readonly rounds = new Map<string, Round>();
  /** issuedAt of the last change signed here: each change is later than the one before. */
  private lastChange = 0;
  private constructor(
    readonly party: PartyClient,
    readonly dsmId: string,
    private readonly key: KeyObject,
  ) {
    party.client.on('message', (topic, payload) => {
      const text = payload.toString('utf8');
      const parsed = parseTopic(topic);
      const mine = parsed?.scope === 'party' && parsed.owner.id === dsmId ? parsed.family : undefined;
      if (mine === 'bids') {
        const bids = pseudoBidsSchema.parse(JSON.parse(text));
        this.onBids(bids).catch((err: Error) => {
          this.party.errors.push(`acceptance of ${bids.eventId}: ${err.message}`);
        });
      }
      if (mine === 'compliance') {
        const report = complianceSchema.parse(JSON.parse(text));
        const round = this.rounds.get(report.eventId);
        if (round) round.compliance = report;
      }
    });
  }

  static async create(party: PartyClient, dsmId: string, files: IssuedFiles): Promise<Dsm> {
    return Dsm.withKey(party, dsmId, createPrivateKey(await readFile(files.key)));
  }

  /** A DSM signing with `key` (its certificate's key), e.g. for `tre-party dsm`. */
  static async withKey(party: PartyClient, dsmId: string, key: KeyObject): Promise<Dsm> {
    const dsm = new Dsm(party, dsmId, key);
    await party.subscribe([
      topics.pseudoBidsFilter(dsmId),
      topics.complianceFilter(dsmId),
      topics.inbox({ role: 'dsm', id: dsmId }, 'receipt'),
    ]);
    return dsm;
  }

  /**
   * Cancels an event (signed): its bids are void, and once accepted, its credits reversed. Resolves
   * with the TRE's receipt (refused ones too: `reason`, `message`).
   */
  async cancel(eventId: string): Promise<Receipt> {
    const cancel: DrCancel = { v: PROTOCOL_VERSION, eventId, dsmId: this.dsmId, issuedAt: this.issuedAt() };
    const receipt = await this.request(topics.drCancel(this.dsmId, eventId), `cancel-${eventId}`, {
      jws: await signContent('drCancel', cancel, this.key),
    });
    const round = this.rounds.get(eventId);
    if (round && receipt.status === 'accepted') round.cancelled = true;
    return receipt;
  }

  /**
   * Modifies an event's terms (signed; the bid deadline must be in the future: bidding opens
   * again, and the earlier bids are void). Resolves with the TRE's receipt.
   */
  async modify(eventId: string, terms: DrTerms): Promise<Receipt> {
    const modify: DrModify = {
      v: PROTOCOL_VERSION,
      eventId,
      dsmId: this.dsmId,
      issuedAt: this.issuedAt(),
      terms,
    };
    const receipt = await this.request(topics.drModify(this.dsmId, eventId), `modify-${eventId}`, {
      jws: await signContent('drModify', modify, this.key),
    });
    const round = this.rounds.get(eventId);
    if (round && receipt.status === 'accepted') {
      round.event = { ...round.event, ...terms };
      round.revision++;
      round.accepted = [];
      round.acceptedWh = 0;
      round.creditMicro = 0;
      delete round.bids;
      delete round.compliance;
    }
    return receipt;
  }

  private issuedAt(): string {
    this.lastChange = Math.max(Date.now(), this.lastChange + 1);
    return new Date(this.lastChange).toISOString();
  }

  /** Publishes a signed request and waits for its receipt on the DSM's inbox. */
  private async request(topic: string, prefix: string, body: { jws: string }): Promise<Receipt> {
    const requestId = `${prefix}-${this.lastChange}`.slice(0, 64);
    const inbox = topics.inbox({ role: 'dsm', id: this.dsmId }, 'receipt');
    const receipt = new Promise<Receipt>((resolve) => {
      const onMessage = (t: string, payload: Buffer) => {
        if (t !== inbox) return;
        const r = JSON.parse(payload.toString('utf8')) as Receipt;
        if (r.requestId !== requestId) return;
        this.party.client.removeListener('message', onMessage);
        resolve(r);
      };
      this.party.client.on('message', onMessage);
    });
    await this.party.publish(topic, { v: PROTOCOL_VERSION, requestId, ...body });
    return receipt;
  }

  /** Raises an event: bids until `bidDeadline`, acceptance until `acceptBy`, delivery in [windowStart, windowEnd). */
  async raise(event: Omit<DrEvent, 'v' | 'dsmId'>): Promise<void> {
    const full: DrEvent = { v: PROTOCOL_VERSION, dsmId: this.dsmId, ...event };
    this.rounds.set(full.eventId, {
      event: full,
      accepted: [],
      acceptedWh: 0,
      creditMicro: 0,
      revision: 0,
      cancelled: false,
    });
    await this.party.publish(topics.drEvent(this.dsmId), {
      v: PROTOCOL_VERSION,
      requestId: `event-${full.eventId}`,
      jws: await signContent('drEvent', full, this.key),
    });
  }

  private async onBids(bids: PseudoBids): Promise<void> {
    const round = this.rounds.get(bids.eventId);
    if (!round) return;
    round.bids = bids;
    const chosen = meritOrder(bids.bids, round.event.requestedReductionWh);
    round.accepted = chosen.map((b) => b.pseudonym);
    round.acceptedWh = chosen.reduce((a, b) => a + b.quantityWh, 0);
    round.creditMicro = chosen.reduce((a, b) => a + b.quantityWh * b.pricePerMWh, 0);
    const acceptance: Acceptance = {
      v: PROTOCOL_VERSION,
      eventId: bids.eventId,
      dsmId: this.dsmId,
      accepted: round.accepted,
    };
    await this.party.publish(topics.accept(this.dsmId, bids.eventId), {
      v: PROTOCOL_VERSION,
      requestId: `accept-${bids.eventId}`,
      jws: await signContent('drAcceptance', acceptance, this.key),
    });
  }
}
