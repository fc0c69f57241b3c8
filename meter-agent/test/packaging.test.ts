/**
 * The Pi packages: the amd64 .deb installed into a scratch root (`dpkg -x`) runs
 * `meter-agent read --replay` from there; every native module in the arm64 .deb is aarch64.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { meterCapture } from './support/capture.js';

const run = promisify(execFile);
const builder = fileURLToPath(new URL('../packaging/build-deb.mjs', import.meta.url));
let dir = '';
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function nodeFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true }))
    if (e.isFile() && e.name.endsWith('.node')) out.push(join(e.parentPath, e.name));
  return out;
}

describe('Debian packages', () => {
  it('amd64 runs from a scratch root; arm64 carries only aarch64 native code', {
    timeout: 240_000,
  }, async () => {
    dir = await mkdtemp(join(tmpdir(), 'debs-'));
    const { stdout } = await run(process.execPath, [builder, '--arch', 'amd64,arm64', '--out', dir], {
      maxBuffer: 16 * 2 ** 20,
    });
    const [amd64, arm64] = stdout.trim().split('\n');
    expect(amd64).toMatch(/meter-agent_\d+\.\d+\.\d+_amd64\.deb$/);
    expect(arm64).toMatch(/_arm64\.deb$/);
    const control = (await run('dpkg-deb', ['-f', arm64!, 'Architecture', 'Depends'])).stdout;
    expect(control).toMatch(/Architecture: arm64/);

    const rootAmd64 = join(dir, 'root-amd64');
    await run('dpkg-deb', ['-x', amd64!, rootAmd64]);
    const capture = join(dir, 'capture.bin');
    await writeFile(capture, meterCapture(Date.UTC(2026, 0, 5, 8, 0, 5), 35, () => 1_200).bytes);
    const cli = join(rootAmd64, 'usr/lib/meter-agent/node_modules/@tre/meter-agent/dist/cli.js');
    const replay = await run(process.execPath, [cli, 'read', '--replay', capture]);
    expect(replay.stdout).toMatch(/interval 2026-01-05T08:15:00.000Z 15 min: 300 Wh in/);
    expect(replay.stdout).toMatch(/211 telegrams, 0 rejected/);

    const rootArm64 = join(dir, 'root-arm64');
    await run('dpkg-deb', ['-x', arm64!, rootArm64]);
    const natives = await nodeFiles(rootArm64);
    expect(natives.length).toBeGreaterThan(0);
    for (const f of natives)
      expect((await run('file', ['-b', f])).stdout, f).toMatch(/ELF 64-bit LSB shared object, ARM aarch64/);
  });
});
