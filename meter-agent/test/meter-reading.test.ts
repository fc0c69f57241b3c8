/** The `meter:` section to a meter port: protocols, framing defaults per protocol, SML is 8N1. */
import { describe, expect, it } from 'vitest';
import { agentConfigSchema } from '../src/agent-config.js';
import { meterPortOf } from '../src/meter-reading.js';

const meter = (m: Record<string, unknown>) =>
  agentConfigSchema.shape.meter.safeParse({ port: '/dev/ttyUSB0', ...m });

describe('meter port of agent.yaml', () => {
  it('dsmr: 115200 8N1 unless 9600-7E1; sml: 9600 8N1 unless told; mode C: its poll interval', () => {
    const port = (m: Record<string, unknown>) => {
      const r = meter(m);
      if (!r.success) throw new Error(r.error.message);
      return meterPortOf(r.data);
    };
    expect(port({})).toEqual({
      protocol: 'dsmr',
      path: '/dev/ttyUSB0',
      baudRate: 115_200,
      dataBits: 8,
      parity: 'none',
    });
    expect(port({ framing: '9600-7E1' })).toMatchObject({ baudRate: 9_600, dataBits: 7, parity: 'even' });
    expect(port({ protocol: 'sml' })).toEqual({ protocol: 'sml', path: '/dev/ttyUSB0', baudRate: 9_600 });
    expect(port({ protocol: 'sml', framing: '2400-8N1' })).toMatchObject({ baudRate: 2_400 });
    expect(port({ protocol: 'iec62056-21', pollSeconds: 30 })).toEqual({
      protocol: 'iec62056-21',
      path: '/dev/ttyUSB0',
      pollMs: 30_000,
    });
  });
  it('refuses a 7E1 framing for sml, and unknown protocols', () => {
    expect(meter({ protocol: 'sml', framing: '9600-7E1' }).error?.issues).toMatchObject([
      { path: ['framing'], message: expect.stringMatching(/sml is 8N1/) },
    ]);
    expect(meter({ protocol: 'mbus' }).success).toBe(false);
  });
});
