/** Who may connect: only holders of a valid, unrevoked certificate from the regulator CA. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROTOCOL_VERSION } from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectWith,
  nextMessage,
  publishOutcome,
  startTreFixture,
  subscribeOutcome,
  type TreFixture,
} from './support/tre-fixture.js';

let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture({ revocationPollMs: 100 });
});
afterAll(async () => fx?.close());

async function refused(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('connection was accepted');
}

describe('connect', () => {
  it('accepts a certificate from the regulator CA', async () => {
    const client = await fx.connect('meter', 'ok1');
    expect(client.connected).toBe(true);
  });

  it('refuses a client without a certificate', async () => {
    const files = await fx.issue('meter', 'nocert');
    const client = mqtt.connect(fx.url, {
      ca: files.ca,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 3000,
    });
    const outcome = await new Promise<string>((resolve) => {
      client.once('connect', () => resolve('connected'));
      client.once('error', () => resolve('refused'));
      client.once('close', () => resolve('refused'));
    });
    client.end(true);
    expect(outcome).toBe('refused');
  });

  it('refuses a certificate from another CA with the same identity', async () => {
    const { ca: rogue } = await CertificateAuthority.initForDevelopment(
      await mkdtemp(join(tmpdir(), 'rogue-ca-')),
    );
    const files = await rogue.issue('meter', 'm1');
    const realCa = await fx.issue('meter', 'm1');
    expect(await refused(connectWith(fx.url, { ...files, ca: realCa.ca }))).toMatch(
      /closed|certificate|alert|socket/i,
    );
  });

  it('refuses an expired certificate', async () => {
    const files = await fx.issue('meter', 'old', {
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    expect(await refused(connectWith(fx.url, files))).toMatch(/closed|expired|alert|socket/i);
  });

  it('refuses a revoked certificate at connect and drops its live session within seconds', async () => {
    await fx.issue('meter', 'rev');
    const live = await fx.connect('meter', 'rev');
    const dropped = new Promise<number>((resolve) => {
      const start = Date.now();
      live.once('close', () => resolve(Date.now() - start));
    });
    await fx.ca.revoke('meter', 'rev');
    expect(await dropped).toBeLessThan(5_000);
    expect(await refused(fx.connect('meter', 'rev'))).toBeTruthy();
    // Others are unaffected.
    expect((await fx.connect('meter', 'ok2')).connected).toBe(true);
  });

  it('refuses MQTT 5 (the TRE speaks 3.1.1; receipts replace v5 reason codes)', async () => {
    const files = await fx.issue('meter', 'v5');
    expect(await refused(connectWith(fx.url, files, { protocolVersion: 5 }))).toBeTruthy();
  });
});

describe('identity comes from the certificate, not the client id', () => {
  it('cert m1 with client id "m2" cannot touch m2 and cannot take over m2 session', async () => {
    const m2 = await fx.connect('meter', 'm2', { clientId: 'm2' });
    const spoof = await fx.connect('meter', 'm1', { clientId: 'm2' });
    expect(await subscribeOutcome(spoof, 'tre/v1/meter/m2/inbox/+')).toBe(128);
    expect(await publishOutcome(spoof, 'tre/v1/meter/m2/reading', '{}')).toBe('closed');
    // The real m2 is still connected and still works.
    expect(m2.connected).toBe(true);
    expect(await subscribeOutcome(m2, 'tre/v1/meter/m2/inbox/+')).not.toBe(128);
  });
});

describe('broadcasts', () => {
  it('a retained broadcast is readable by meters but not writable by them', async () => {
    const body = JSON.stringify({ v: PROTOCOL_VERSION, jws: 'x.y.z' });
    await fx.tre.broker.publish('tre/v1/broadcast/tariff/s1', body, { retain: true });
    const meter = await fx.connect('meter', 'reader');
    const msg = await nextMessage(meter, 'tre/v1/broadcast/tariff/+');
    expect(msg.payload.toString()).toBe(body);
    expect(await publishOutcome(meter, 'tre/v1/broadcast/tariff/s1', '{"v":1,"jws":"forged"}')).toBe(
      'closed',
    );
    const again = await fx.connect('meter', 'reader2');
    expect((await nextMessage(again, 'tre/v1/broadcast/tariff/+')).payload.toString()).toBe(body);
  });
});

describe('registry', () => {
  it('refuses a meter with a valid certificate that is not registered', async () => {
    const files = await fx.issue('meter', 'unregistered', undefined, false);
    expect(await refused(connectWith(fx.url, files))).toMatch(/[Nn]ot authorized|closed/);
  });
});
