/** `meter-agent read --replay` on a capture: the built CLI, as a user runs it. */
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { formatSmlFile } from '@tre/hardware';
import { describe, expect, it } from 'vitest';
import { meterCapture } from './support/capture.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const run = promisify(execFile);

describe('meter-agent read --replay', () => {
  it('prints telegrams and interval energy from a capture', async () => {
    const start = Date.UTC(2026, 0, 5, 8, 0, 5);
    const { bytes, registerAt } = meterCapture(start, 60, (t) => 1_000 + ((t / 60_000) % 7) * 100);
    const dir = await mkdtemp(join(tmpdir(), 'replay-'));
    await writeFile(join(dir, 'capture.bin'), bytes);
    const { stdout } = await run(process.execPath, [
      cli,
      'read',
      '--replay',
      join(dir, 'capture.bin'),
      '--json',
    ]);
    const r = JSON.parse(stdout) as {
      telegrams: unknown[];
      intervals: { intervalStart: string; importWh: number }[];
      noiseBytes: number;
    };
    expect(r.telegrams).toHaveLength(361);
    expect(r.noiseBytes).toBe(361 * 6);
    expect(r.intervals.map((i) => i.intervalStart)).toEqual([
      '2026-01-05T08:15:00.000Z',
      '2026-01-05T08:30:00.000Z',
      '2026-01-05T08:45:00.000Z',
    ]);
    const b = (h: number, m: number) => registerAt(Date.UTC(2026, 0, 5, h, m) - 1);
    expect(r.intervals.map((i) => i.importWh)).toEqual([
      b(8, 30) - b(8, 15),
      b(8, 45) - b(8, 30),
      b(9, 0) - b(8, 45),
    ]);
    const text = await run(process.execPath, [cli, 'read']).catch((e: { code: number; stderr: string }) => e);
    expect(text).toMatchObject({ code: 2, stderr: expect.stringMatching(/--replay FILE or --port PATH/) });
  });

  it('replays a binary SML capture: files told from the bytes, a corrupted one rejected, intervals from meter time', async () => {
    const t0 = Date.UTC(2026, 0, 5, 8, 0, 2);
    const file = (m: number) =>
      formatSmlFile(
        [
          { obis: '1-0:1.8.0', unit: 30, scaler: -1, value: 10_000_000 + m * 1_000 }, // 100 Wh a minute
          { obis: '1-0:2.8.0', unit: 30, scaler: -1, value: 0 },
          { obis: '1-0:16.7.0', unit: 27, scaler: 0, value: -250, size: 2 },
        ],
        { at: t0 + m * 60_000 },
      );
    const files = Array.from({ length: 46 }, (_, m) => file(m));
    const bad = Buffer.from(files[20]!);
    bad[70]! ^= 0x01;
    files[20] = bad;
    const dir = await mkdtemp(join(tmpdir(), 'replay-sml-'));
    await writeFile(join(dir, 'ir-head.bin'), Buffer.concat(files));
    const { stdout } = await run(process.execPath, [
      cli,
      'read',
      '--replay',
      join(dir, 'ir-head.bin'),
      '--json',
    ]);
    const r = JSON.parse(stdout) as {
      snapshots: { protocol: string; importWh: number; powerExportW: number }[];
      rejected: { reason: string }[];
      intervals: { intervalStart: string; importWh: number }[];
    };
    expect(r.snapshots).toHaveLength(45);
    expect(r.snapshots[0]).toMatchObject({ protocol: 'sml', importWh: 1_000_000, powerExportW: 250 });
    expect(r.rejected).toEqual([{ reason: 'CRC_MISMATCH', detail: expect.any(String) }]);
    expect(r.intervals.map((i) => [i.intervalStart, i.importWh])).toEqual([
      ['2026-01-05T08:15:00.000Z', 1_500],
      ['2026-01-05T08:30:00.000Z', 1_500],
    ]);
    const text = await run(process.execPath, [cli, 'read', '--replay', join(dir, 'ir-head.bin')]);
    expect(text.stdout).toMatch(/45 SML files, 1 rejected, 0 cut off, 0 noise bytes, 2 intervals/);
  });
});
