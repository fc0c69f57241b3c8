/**
 * Suppliers' tariffs in the TRE (paper III-B): verified against the connected supplier's
 * certificate key, checked against the regulator's shape rules (tariff-rules.ts) and the book
 * (tariff-book.ts: future intervals only, no overlap), stored, re-signed by the TRE and broadcast
 * (retained) for the households' agents to verify. The receipt says accepted or why not, nothing
 * about any household.
 */
import { PROTOCOL_VERSION, signContent, tariffSchema, topics } from '@tre/protocol';
import { type HandlerResult, type InboundMessage, refusal } from '../broker/message-router.js';
import { verifySignedRequest } from '../broker/signed-request.js';
import type { FlowBase } from '../flow-base.js';
import type { RegulatorConfig } from '../regulator/regulator-config.js';
import type { TariffBook } from './tariff-book.js';
import { checkTariffShape, RATIO_WINDOW_MS } from './tariff-rules.js';

export interface TariffDeps
  extends Pick<FlowBase, 'store' | 'router' | 'outbound' | 'clock' | 'log' | 'signingKey'> {
  tariffs: TariffBook;
  regulatorConfig: Pick<RegulatorConfig, 'tariffRules'>;
  /** Start of the supplier's open billing period (a tariff may not start before it). */
  openPeriodStart: (supplierId: string) => number | undefined;
}

export class TariffService {
  constructor(private readonly deps: TariffDeps) {}

  start(): void {
    this.deps.router.on('tariff', (m) => this.handle(m));
    this.rebroadcast().catch((err: Error) =>
      this.deps.log.error({ err: err.message }, 'tariff re-broadcast failed'),
    );
  }

  private async handle(msg: InboundMessage): Promise<HandlerResult> {
    const { store, tariffs, regulatorConfig, clock } = this.deps;
    const signed = await verifySignedRequest(msg, 'tariff', tariffSchema, (t) => t.supplierId);
    if (!signed.ok) return signed.refusal;
    const { requestId, content: tariff } = signed;
    const problem =
      tariffs.check(tariff, this.deps.openPeriodStart(tariff.supplierId), clock.now()) ??
      checkTariffShape(
        tariff,
        regulatorConfig.tariffRules(),
        tariffs.pricesBefore(tariff.supplierId, Date.parse(tariff.validFrom), RATIO_WINDOW_MS),
      );
    if (problem) return refusal(requestId, problem.reason, problem.message);
    const treJws = await signContent('tariff', tariff, this.deps.signingKey);
    await store.commit(() => tariffs.add(tariff, treJws));
    await this.broadcast(tariff.supplierId, treJws);
    return { status: 'accepted', requestId, message: 'tariff stored' };
  }

  private async rebroadcast(): Promise<void> {
    for (const t of this.deps.tariffs.latest()) await this.broadcast(t.supplierId, t.treJws);
  }

  private broadcast(supplierId: string, treJws: string): Promise<void> {
    return this.deps.outbound.publish(
      topics.broadcastTariff(supplierId),
      JSON.stringify({ v: PROTOCOL_VERSION, jws: treJws }),
      { retain: true },
    );
  }
}
