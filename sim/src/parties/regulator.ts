/**
 * The regulator: runs the PKI (outside MQTT) and registers the households with the TRE (over MQTT),
 * as signed registry updates, each with a later `issuedAt` than the one before.
 */
import type { KeyObject } from 'node:crypto';
import { type Household, PROTOCOL_VERSION, type RegistryUpdate, signContent, topics } from '@tre/protocol';
import type { PartyClient } from './party-client.js';

export async function registerHouseholds(
  regulator: PartyClient,
  regulatorId: string,
  households: Household[],
  key: KeyObject,
  issuedAt: number,
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
    const update: RegistryUpdate = {
      v: PROTOCOL_VERSION,
      households: households.slice(i, i + 10_000),
      issuedAt: new Date(issuedAt + i / 10_000).toISOString(), // one millisecond later per update
    };
    await regulator.publish(topics.registry(regulatorId), {
      v: PROTOCOL_VERSION,
      requestId,
      jws: await signContent('registryUpdate', update, key),
    });
    await done;
  }
}
