/** The bounds rules of a reading, without SQLite or MQTT. */
import { describe, expect, it } from 'vitest';
import { judgeReading } from '../src/ingest/reading-rules.js';

const ok = (register_wh: number) => ({ register_wh, status: 'ok' });

describe('judgeReading', () => {
  it('uses the register difference with an in-bounds previous reading, else the reported energy', () => {
    expect(judgeReading(1_500, 999, ok(1_200), undefined, 2_501)).toEqual({ effectiveWh: 300 });
    expect(judgeReading(1_500, 250, { register_wh: 1_200, status: 'excluded' }, undefined, 2_501)).toEqual({
      effectiveWh: 250,
    });
    expect(judgeReading(1_500, 250, undefined, undefined, 2_501)).toEqual({ effectiveWh: 250 });
  });

  it('excludes a register going backwards against either neighbour', () => {
    expect(judgeReading(1_000, 0, ok(1_200), undefined, 2_501).excluded?.alert).toBe('register-backwards');
    expect(judgeReading(1_000, 0, undefined, ok(900), 2_501).excluded?.alert).toBe('register-backwards');
  });

  it('excludes negative energy and energy above capacity x interval', () => {
    expect(judgeReading(1_000, -1, undefined, undefined, 2_501).excluded?.why).toBe(
      'negative interval energy',
    );
    expect(judgeReading(5_000, 0, ok(2_000), undefined, 2_501).excluded).toEqual({
      why: 'interval energy above installed capacity x interval (2501 Wh)',
      alert: 'reading-out-of-bounds',
    });
    expect(judgeReading(4_501, 0, ok(2_000), undefined, 2_501).excluded).toBeUndefined();
  });
});
