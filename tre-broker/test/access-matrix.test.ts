/**
 * The access matrix, cell by cell, over real mutual TLS: every role x every topic family,
 * publish and subscribe, on its own subtree and on another party's. The expected table is written
 * out here by hand (not derived from the code under test).
 */
import type { PartyRole } from '@tre/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishOutcome, startTreFixture, subscribeOutcome, type TreFixture } from './support/tre-fixture.js';

const ROLES: PartyRole[] = ['meter', 'dno', 'supplier', 'dsm', 'regulator'];
const FAMILIES = [
  'reading',
  'bid',
  'override',
  'attest',
  'groups',
  'tariff',
  'billing-period',
  'statement-ack',
  'event',
  'accept/e1',
  'cancel/e1',
  'modify/e1',
  'registry',
  'config',
  'inbox/receipt',
  'inbox/bill',
  'inbox/attestation',
  'aggregate/g1',
  'statement',
  'bids/e1',
  'compliance/e1',
];

const MAY_PUBLISH_OWN: Record<PartyRole, string[]> = {
  meter: ['reading', 'bid', 'override', 'attest'],
  dno: ['groups', 'attest'],
  supplier: ['tariff', 'billing-period', 'statement-ack', 'attest'],
  dsm: ['event', 'accept/e1', 'cancel/e1', 'modify/e1', 'attest'],
  regulator: ['registry', 'config', 'attest'],
};
// Every party attests the TRE before sending anything: each publishes its own `attest` and
// receives the evidence on its own `inbox/attestation`.
const MAY_SUBSCRIBE_OWN: Record<PartyRole, string[]> = {
  meter: ['inbox/receipt', 'inbox/bill', 'inbox/attestation'],
  dno: ['inbox/receipt', 'inbox/bill', 'inbox/attestation', 'aggregate/g1'],
  supplier: ['inbox/receipt', 'inbox/bill', 'inbox/attestation', 'statement'],
  dsm: ['inbox/receipt', 'inbox/bill', 'inbox/attestation', 'bids/e1', 'compliance/e1'],
  regulator: ['inbox/receipt', 'inbox/bill', 'inbox/attestation'],
};
const WILDCARD_SUBSCRIBE_OWN: Record<PartyRole, string[]> = {
  meter: ['inbox/+'],
  dno: ['inbox/+', 'aggregate/+'],
  supplier: ['inbox/+'],
  dsm: ['inbox/+', 'bids/+', 'compliance/+'],
  regulator: ['inbox/+'],
};

let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture();
  for (const role of ROLES) {
    await fx.issue(role, 'a');
    await fx.issue(role, 'b');
  }
});
afterAll(async () => fx?.close());

/** Publishes on a fresh connection per cell (a refused publish closes the connection). */
async function canPublish(role: PartyRole, topic: string): Promise<boolean> {
  const client = await fx.connect(role, 'a');
  const outcome = await publishOutcome(client, topic, '{}');
  client.end(true);
  return outcome === 'acked';
}

describe.each(ROLES)('%s', (role) => {
  it('publishes exactly its own up families, nothing of another party', async () => {
    const cells: string[] = [];
    for (const family of FAMILIES) {
      const own = await canPublish(role, `tre/v1/${role}/a/${family}`);
      cells.push(`${family}:${own}`);
      expect(own, `${role} publish own ${family}`).toBe(MAY_PUBLISH_OWN[role].includes(family));
      for (const other of ROLES) {
        if (!MAY_PUBLISH_OWN[other].includes(family)) continue;
        expect(
          await canPublish(role, `tre/v1/${other}/b/${family}`),
          `${role} publish ${other}/b/${family}`,
        ).toBe(false);
      }
    }
    expect(cells.length).toBe(FAMILIES.length);
  });

  it('subscribes exactly to its own down families and the broadcasts', async () => {
    const client = await fx.connect(role, 'a');
    for (const family of FAMILIES) {
      const granted = await subscribeOutcome(client, `tre/v1/${role}/a/${family}`);
      expect(granted !== 128, `${role} subscribe own ${family}`).toBe(
        MAY_SUBSCRIBE_OWN[role].includes(family),
      );
      for (const other of ROLES) {
        expect(
          await subscribeOutcome(client, `tre/v1/${other}/b/${family}`),
          `${role} subscribe ${other}/b/${family}`,
        ).toBe(128);
      }
    }
    for (const filter of WILDCARD_SUBSCRIBE_OWN[role]) {
      expect(await subscribeOutcome(client, `tre/v1/${role}/a/${filter}`), filter).not.toBe(128);
    }
    for (const filter of [
      'tre/v1/broadcast/tariff/+',
      'tre/v1/broadcast/dr-event/+',
      'tre/v1/broadcast/tariff/s1',
    ]) {
      expect(await subscribeOutcome(client, filter), filter).not.toBe(128);
    }
    for (const filter of [
      '#',
      '+/#',
      'tre/#',
      'tre/v1/#',
      'tre/v1/+/a/inbox/+',
      `tre/v1/${role}/+/inbox/+`,
      `tre/v1/${role}/a/#`,
      'tre/v1/meter/+/reading',
      'tre/v1/meter/+/bid',
      'tre/v1/broadcast/#',
      '$SYS/#',
    ]) {
      expect(await subscribeOutcome(client, filter), filter).toBe(128);
    }
    expect(client.connected).toBe(true);
  });

  it('cannot publish to broadcasts or retained', async () => {
    expect(await canPublish(role, 'tre/v1/broadcast/tariff/s1')).toBe(false);
    const client = await fx.connect(role, 'a');
    const own = `tre/v1/${role}/a/attest`;
    const retained = await new Promise<string>((resolve) => {
      client.once('close', () => resolve('closed'));
      client.publish(own, '{}', { qos: 1, retain: true }, (err) => resolve(err ? 'closed' : 'acked'));
    });
    expect(retained).toBe('closed');
  });
});
