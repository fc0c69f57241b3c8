import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  decodePayload,
  readingSchema,
  signContent,
  type Tariff,
  tariffSchema,
  verifyContent,
} from '../src/index.js';

const tariff: Tariff = {
  v: 1,
  supplierId: 's1',
  tariffId: 't1',
  currency: 'GBP',
  validFrom: '2026-12-01T00:00:00Z',
  validTo: '2026-12-01T01:00:00Z',
  intervalMinutes: 30,
  pricesPerMWh: [24500, 31000],
};

describe('signed content', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  it('verifies what it signed', async () => {
    const jws = await signContent('tariff', tariff, privateKey);
    await expect(verifyContent('tariff', jws, publicKey, tariffSchema)).resolves.toEqual(tariff);
  });
  it('refuses another key, another type and a tampered payload', async () => {
    const jws = await signContent('tariff', tariff, privateKey);
    await expect(verifyContent('tariff', jws, other.publicKey, tariffSchema)).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
    await expect(verifyContent('statement', jws, publicKey, tariffSchema)).rejects.toMatchObject({
      code: 'WRONG_TYPE',
    });
    const [h, , s] = jws.split('.');
    const forged = Buffer.from(JSON.stringify({ ...tariff, pricesPerMWh: [1, 1] })).toString('base64url');
    await expect(
      verifyContent('tariff', `${h}.${forged}.${s}`, publicKey, tariffSchema),
    ).rejects.toMatchObject({
      code: 'BAD_SIGNATURE',
    });
  });
});

describe('decodePayload', () => {
  const good = {
    v: 1,
    requestId: 'r1',
    intervalStart: '2026-11-24T20:00:00Z',
    intervalMinutes: 15,
    energyWh: 120,
    registerWh: 1_000_000,
  };
  it('accepts a valid reading', () => {
    expect(decodePayload(Buffer.from(JSON.stringify(good)), readingSchema)).toEqual({
      ok: true,
      value: good,
    });
  });
  it('refuses bad input without throwing, keeping the requestId', () => {
    expect(decodePayload(Buffer.from([0xff, 0xfe]), readingSchema)).toMatchObject({
      ok: false,
      reason: 'MALFORMED',
    });
    expect(decodePayload(Buffer.alloc(1024 * 1024 + 1, 32), readingSchema)).toMatchObject({
      reason: 'TOO_LARGE',
    });
    const r = decodePayload(Buffer.from(JSON.stringify({ ...good, energyWh: 1.5, extra: 1 })), readingSchema);
    expect(r).toMatchObject({ ok: false, reason: 'MALFORMED', requestId: 'r1' });
    expect(
      decodePayload(Buffer.from(JSON.stringify({ ...good, intervalMinutes: 20 })), readingSchema).ok,
    ).toBe(false);
  });
});
