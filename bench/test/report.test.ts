/** Benchmark results for machines: field names carry the unit, numbers stay numbers. */
import { describe, expect, it } from 'vitest';
import { fieldName, jsonOf } from '../src/report.js';

describe('bench JSON', () => {
  it('names every column of the benchmarks with its unit', () => {
    expect(
      [
        'msg/s',
        'p50 ms',
        'RSS MiB',
        'one quote each /s',
        'deadline -> pseudo-bids ms',
        'bound Wh/30 min',
        'memory per session KiB',
        'error %',
      ].map(fieldName),
    ).toEqual([
      'msgPerSecond',
      'p50Ms',
      'rssMiB',
      'oneQuoteEachPerSecond',
      'deadlineToPseudoBidsMs',
      'boundWhPer30Min',
      'memoryPerSessionKiB',
      'errorPercent',
    ]);
  });

  it('one record per row, numbers as numbers, the summary as given', () => {
    const json = jsonOf({
      name: 'x',
      description: 'd',
      columns: ['broker', 'msg/s'],
      rows: [
        ['TRE', 8648.5],
        ['mosquitto', 10186],
      ],
      notes: [],
      summary: { ratio: 0.849 },
    });
    expect(json.records).toEqual([
      { broker: 'TRE', msgPerSecond: 8648.5 },
      { broker: 'mosquitto', msgPerSecond: 10186 },
    ]);
    expect(json.summary).toEqual({ ratio: 0.849 });
    expect(JSON.parse(JSON.stringify(json)).records[0].msgPerSecond).toBeTypeOf('number');
  });
});
