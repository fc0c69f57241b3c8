/**
 * The reference DSM: raises signed demand-response events, clears the released pseudo-bids in
 * merit order and signs its acceptance (before the event's acceptBy), and records the compliance
 * reports. Everything it learns is in `rounds`.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  type Acceptance,
  type Compliance,
  complianceSchema,
  type DrEvent,
  PROTOCOL_VERSION,
  type PseudoBids,
  parseTopic,
  pseudoBidsSchema,
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
}

export class Dsm {
  readonly rounds = new Map<string, Round>();
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
    const dsm = new Dsm(party, dsmId, createPrivateKey(await readFile(files.key)));
    await party.subscribe([topics.pseudoBidsFilter(dsmId), topics.complianceFilter(dsmId)]);
    return dsm;
  }

  /** Raises an event: bids until `bidDeadline`, acceptance until `acceptBy`, delivery in [windowStart, windowEnd). */
  async raise(event: Omit<DrEvent, 'v' | 'dsmId'>): Promise<void> {
    const full: DrEvent = { v: PROTOCOL_VERSION, dsmId: this.dsmId, ...event };
    this.rounds.set(full.eventId, { event: full, accepted: [], acceptedWh: 0, creditMicro: 0 });
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
