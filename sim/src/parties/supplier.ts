/** The reference supplier: a time-of-use tariff, a daily billing period, and acknowledged statements. */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import {
  PROTOCOL_VERSION,
  type Statement,
  signContent,
  signedEnvelopeSchema,
  statementSchema,
  type Tariff,
  topics,
} from '@tre/protocol';
import type { IssuedFiles } from '@tre/tre-broker';
import { decodeJwt } from 'jose';
import type { PartyClient } from './party-client.js';

/** Time of use: 15 p/kWh at night, 24 p/kWh by day, 35 p/kWh 16:00-19:00 (UTC), per MWh in pence. */
export function timeOfUsePrice(t: number): number {
  const hour = new Date(t).getUTCHours();
  return hour < 7 ? 150_000 : hour >= 16 && hour < 19 ? 350_000 : 240_000;
}

export class Supplier {
  /** Statements by id (re-sends carry the same id). */
  readonly statements = new Map<string, Statement>();

  private constructor(
    readonly party: PartyClient,
    readonly supplierId: string,
    private readonly key: KeyObject,
  ) {
    party.client.on('message', (topic, payload) => {
      if (topic !== topics.statement(supplierId)) return;
      const env = signedEnvelopeSchema.safeParse(JSON.parse(payload.toString('utf8')));
      if (!env.success) return;
      const st = statementSchema.parse(decodeJwt(env.data.jws));
      const fresh = !this.statements.has(st.statementId);
      this.statements.set(st.statementId, st);
      if (fresh)
        this.party.send(topics.statementAck(supplierId), {
          v: PROTOCOL_VERSION,
          requestId: `ack-${st.statementId}`,
          statementIds: [st.statementId],
        });
    });
  }

  static async create(party: PartyClient, supplierId: string, files: IssuedFiles): Promise<Supplier> {
    const s = new Supplier(party, supplierId, createPrivateKey(await readFile(files.key)));
    await party.subscribe([topics.statement(supplierId)]);
    return s;
  }

  /** Publishes a 30-minute time-of-use tariff for [from, from + days) and a daily billing period from `from`. */
  async start(from: number, days: number): Promise<Tariff> {
    const tariff: Tariff = {
      v: PROTOCOL_VERSION,
      supplierId: this.supplierId,
      tariffId: `tou-${new Date(from).toISOString().slice(0, 10)}`,
      currency: 'GBP',
      validFrom: new Date(from).toISOString(),
      validTo: new Date(from + days * 86_400_000).toISOString(),
      intervalMinutes: 30,
      pricesPerMWh: Array.from({ length: days * 48 }, (_, i) => timeOfUsePrice(from + i * 1_800_000)),
    };
    await this.party.publish(topics.billingPeriod(this.supplierId), {
      v: PROTOCOL_VERSION,
      requestId: 'period',
      startsAt: tariff.validFrom,
      length: { unit: 'day', count: 1 },
    });
    await this.party.publish(topics.tariff(this.supplierId), {
      v: PROTOCOL_VERSION,
      requestId: 'tariff',
      jws: await signContent('tariff', tariff, this.key),
    });
    return tariff;
  }
}
