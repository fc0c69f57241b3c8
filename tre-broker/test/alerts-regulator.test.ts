/**
 * Bounds-check alerts go to the household and to the regulator in force (naming the meter: the
 * regulator registers households by id), never to a provider.
 */
import { type Alert, signContent, topics } from '@tre/protocol';
import { describe, expect, it } from 'vitest';
import { flowContext } from './support/flow-context.js';

const T0 = Date.UTC(2026, 2, 2, 12, 0);

describe('bounds-check alerts', () => {
  it('reach the household and the regulator, no provider', async () => {
    const f = flowContext(T0 + 3_600_000);
    try {
      const flows = f.flows();
      await f.ctx.registry.upsert([
        { meterId: 'a1', supplierId: 's', dnoId: 'd', capacityW: 4_000, account: 'x' },
      ]);
      const regulator = f.party({ role: 'regulator', id: 'reg' });
      const config = {
        v: 1,
        minBillingPeriod: { unit: 'month', count: 1 },
        issuedAt: new Date(T0).toISOString(),
      };
      expect(
        await regulator.send(topics.regulatorConfig('reg'), {
          v: 1,
          requestId: 'c',
          jws: await signContent('regulatorConfig', config, regulator.privateKey),
        }),
      ).toMatchObject({ status: 'accepted' });
      const meter = f.party({ role: 'meter', id: 'a1' });
      const refused = await meter.send(topics.reading('a1'), {
        v: 1,
        requestId: 'r',
        intervalStart: new Date(T0).toISOString(),
        intervalMinutes: 15,
        energyWh: 5_000, // above 4 kW x 15 min
        registerWh: 5_000,
      });
      expect(refused).toMatchObject({ status: 'refused', reason: 'OUT_OF_BOUNDS' });
      const alerts = f.published.filter((p) => p.topic.endsWith('/inbox/alert'));
      expect(alerts.map((a) => a.topic).sort()).toEqual(
        [
          topics.inbox({ role: 'meter', id: 'a1' }, 'alert'),
          topics.inbox({ role: 'regulator', id: 'reg' }, 'alert'),
        ].sort(),
      );
      const toRegulator = JSON.parse(alerts.find((a) => a.topic.includes('/regulator/'))!.payload) as Alert;
      expect(toRegulator).toMatchObject({ meterId: 'a1', kind: 'reading-out-of-bounds' });
      const toHousehold = JSON.parse(alerts.find((a) => a.topic.includes('/meter/'))!.payload) as Alert;
      expect(toHousehold.meterId).toBeUndefined();
      flows.stop();
    } finally {
      f.close();
    }
  });
});
