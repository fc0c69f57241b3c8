/** `meter-agent read --replay` on a capture: the built CLI, as a user runs it. */
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
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
});
