/** The regulator: runs the PKI (outside MQTT) and registers the households with the TRE (over MQTT). */
import { type Household, PROTOCOL_VERSION, topics } from '@tre/protocol';
import type { PartyClient } from './party-client.js';

export async function registerHouseholds(
  regulator: PartyClient,
  regulatorId: string,
  households: Household[],
): Promise<void> {
  const receipts = topics.inbox({ role: 'regulator', id: regulatorId }, 'receipt');
  await regulator.subscribe([receipts]);
  for (let i = 0; i < households.length; i += 10_000) {
    const requestId = `registry-${i}`;
    const done = new Promise<void>((resolve, reject) => {
      const onMessage = (topic: string, payload: Buffer) => {
        if (topic !== receipts) return;
        const r = JSON.parse(payload.toString()) as { requestId: string; status: string; message?: string };
        if (r.requestId !== requestId) return;
        regulator.client.removeListener('message', onMessage);
        if (r.status === 'accepted') resolve();
        else reject(new Error(`registry refused: ${r.message}`));
      };
      regulator.client.on('message', onMessage);
    });
    await regulator.publish(topics.registry(regulatorId), {
      v: PROTOCOL_VERSION,
      requestId,
      households: households.slice(i, i + 10_000),
    });
    await done;
  }
}
