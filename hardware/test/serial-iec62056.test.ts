import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  acknowledge,
  formatModeCDataBlock,
  ModeCReader,
  modeCSnapshot,
  parseIdentification,
  parseModeCDataBlock,
  SIGN_ON,
  systemSerialBinding,
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
        exportByTariffWh: {},
        meterId: '12345678',
      },
    });
  });
  it('as the common snapshot: registers, no meter time', () => {
    const r = parseModeCDataBlock(block);
    expect(r.ok && modeCSnapshot(r.readout)).toEqual({
      protocol: 'iec62056-21',
      importWh: 1_234_567,
      exportWh: 10_000,
      importByTariffWh: { '1': 934_500, '2': 300_067 },
      exportByTariffWh: {},
      mbus: [],
      skippedLines: [],
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

  it('reads a meter live over a real pseudo-terminal: sign-on, identification, ACK, baud switch, block', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'iec-'));
    const corrupt = Buffer.from(block);
    corrupt[12] = corrupt[12]! ^ 1;
    await writeFile(join(dir, 'good'), block);
    await writeFile(join(dir, 'corrupt'), corrupt);
    const meter = spawn(
      'python3',
      [
        fileURLToPath(new URL('./support/iec_meter_pty.py', import.meta.url)),
        join(dir, 'good'),
        join(dir, 'corrupt'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const path = await new Promise<string>((resolve) =>
        meter.stdout!.once('data', (d) => resolve(String(d).trim())),
      );
      const reader = new ModeCReader({
        path,
        binding: await systemSerialBinding(),
        clock: { now: () => Date.now(), setTimeout, clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout) },
        pollMs: 3_600_000,
        // Generous: on a loaded 2-core CI machine the meter process may answer late; a timeout
        // would wait a whole pollMs for the next exchange.
        timeouts: { identificationMs: 15_000, blockMs: 15_000 },
      });
      // A rejected first exchange fails at once with its reason (the retry would be a poll away).
      const readout = new Promise<{ importWh: number; exportWh: number; meterId?: string }>(
        (resolve, reject) => {
          reader.once('readout', resolve);
          reader.once('rejected', (reason, detail) =>
            reject(new Error(`first exchange rejected: ${reason} ${detail ?? ''}`)),
          );
        },
      );
      reader.start();
      expect(await readout).toMatchObject({ importWh: 1_234_567, exportWh: 10_000, meterId: '12345678' });
      // The next exchange gets a block with a wrong BCC: rejected by name, nothing emitted.
      const rejected = new Promise<string>((resolve) => reader.once('rejected', resolve));
      await reader.poll();
      expect(await rejected).toBe('BCC_MISMATCH');
      expect(reader.counts).toEqual({ readouts: 1, rejected: { BCC_MISMATCH: 1 } });
      expect(reader.stats).toEqual({ telegrams: 1, crcErrors: 1, rejected: 0, skippedLines: 0 });
      await reader.stop();
    } finally {
      meter.kill();
    }
  });
});
