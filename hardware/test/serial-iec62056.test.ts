import { describe, expect, it } from 'vitest';
import {
  acknowledge,
  formatModeCDataBlock,
  parseIdentification,
  parseModeCDataBlock,
  SIGN_ON,
} from '../src/serial/index.js';

describe('IEC 62056-21 mode C', () => {
  const block = formatModeCDataBlock([
    'F.F(00)',
    '0.0.0(12345678)',
    '1.8.0(001234.567*kWh)',
    '1.8.1(000934.500*kWh)',
    '1.8.2(000300.067*kWh)',
    '2.8.0(000010.000*kWh)',
  ]);
  it('parses the data block and checks its BCC', () => {
    expect(parseModeCDataBlock(block)).toEqual({
      ok: true,
      readout: {
        importWh: 1_234_567,
        exportWh: 10_000,
        importByTariffWh: { '1': 934_500, '2': 300_067 },
        meterId: '12345678',
      },
    });
  });
  it('rejects a wrong BCC and a truncated block', () => {
    const bad = Buffer.from(block);
    bad[10] = bad[10]! ^ 1;
    expect(parseModeCDataBlock(bad)).toMatchObject({ ok: false, reason: 'BCC_MISMATCH' });
    expect(parseModeCDataBlock(block.subarray(0, 30))).toMatchObject({ ok: false, reason: 'TRUNCATED' });
  });
  it('handshake: sign-on, identification with baud code, acknowledgement', () => {
    expect(SIGN_ON.toString('latin1')).toBe('/?!\r\n');
    expect(parseIdentification('/ISK5ME382-1000')).toEqual({
      manufacturer: 'ISK',
      baudCode: '5',
      baudRate: 9_600,
    });
    expect(acknowledge('5').toString('latin1')).toBe('\x06050\r\n');
  });
});
