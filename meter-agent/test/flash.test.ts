/**
 * `meter-agent flash` (the built CLI) against a stand-in disk: a regular file as --device, with an
 * injected sysfs root and mount table. A real block device (O_EXCL, the kernel's partition
 * re-read) cannot be tested on a build machine.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootFile, makePiImage } from './support/pi-image.js';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../bin/meter-agent.js', import.meta.url));
let dir = '';
let image = '';
let sys = '';

/** /sys/block/<name> for a 128 MiB removable "SD card" with one partition. */
async function fakeDisk(
  name: string,
  opts: { devOfPart?: string; holders?: string[] } = {},
): Promise<string> {
  const block = join(sys, 'block', name);
  await mkdir(join(block, 'device'), { recursive: true });
  await writeFile(join(block, 'size'), `${(128 * 2 ** 20) / 512}\n`);
  await writeFile(join(block, 'removable'), '1\n');
  await writeFile(join(block, 'device', 'model'), 'SD Card Reader  \n');
  await writeFile(join(block, 'dev'), '8:16\n');
  await mkdir(join(block, `${name}1`, 'holders'), { recursive: true });
  await writeFile(join(block, `${name}1`, 'partition'), '1\n');
  await writeFile(join(block, `${name}1`, 'dev'), `${opts.devOfPart ?? '8:17'}\n`);
  for (const h of opts.holders ?? []) await mkdir(join(block, `${name}1`, 'holders', h));
  const device = join(dir, name);
  await writeFile(device, '');
  await truncate(device, 128 * 2 ** 20);
  return device;
}

function flash(args: string[], input = '', mounts = '') {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const mountsFile = join(dir, `mounts-${Math.random().toString(36).slice(2)}`);
    void writeFile(mountsFile, mounts).then(() => {
      const child = spawn(process.execPath, [
        cli,
        'flash',
        '--sys-root',
        sys,
        '--mounts-file',
        mountsFile,
        ...args,
      ]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
      child.stdin.end(input);
    });
  });
}

/** major:minor of the file system holding `/`, as sysfs writes it. */
async function rootDev(): Promise<string> {
  const { stdout } = await run('stat', ['-c', '%d', '/']);
  const dev = BigInt(stdout.trim());
  return `${((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn)}:${(dev & 0xffn) | ((dev >> 12n) & ~0xffn)}`;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meter-flash-'));
  sys = join(dir, 'sys');
  image = join(dir, 'pi.img');
  await makePiImage(image);
}, 30_000);
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('meter-agent flash', () => {
  it('names the size and model, writes after the device name is typed, then the seed', {
    timeout: 30_000,
  }, async () => {
    const device = await fakeDisk('sdx');
    const seed = join(dir, 'seed');
    await mkdir(join(seed, 'meter-agent'), { recursive: true });
    await writeFile(join(seed, 'user-data'), '#cloud-config\nhostname: meter-m-0009\n');
    await writeFile(join(seed, 'meter-agent', 'enroll.token'), 'tok\n');
    const r = await flash(['--image', image, '--device', device, '--seed', seed], 'sdx\n');
    expect(r.stderr).toContain(`This erases everything on ${device}: 0.1 GB, SD Card Reader, removable.`);
    expect(r.stderr).toContain('Type sdx to write the image');
    expect(r.stderr).toMatch(/write .*: 100% 67\/67 MB/);
    expect(r.code).toBe(0);
    const written = await readFile(device);
    const original = await readFile(image);
    expect(written.subarray(0, 512).equals(original.subarray(0, 512))).toBe(true); // the partition table
    expect((await bootFile(device, 'user-data'))!.toString()).toContain('meter-m-0009');
    expect((await bootFile(device, 'meter-agent/enroll.token'))!.toString()).toBe('tok\n');
    expect(await bootFile(device, 'config.txt')).toBeDefined();
  });

  it('writes nothing when another name is typed', async () => {
    const device = await fakeDisk('sdy');
    const r = await flash(['--image', image, '--device', device], 'sda\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('not written (you typed "sda", not sdy)');
    expect((await stat(device)).blocks).toBe(0);
  });

  it('refuses a mounted disk, and a system disk even with --yes', async () => {
    const device = await fakeDisk('sdz');
    const mounted = await flash(
      ['--image', image, '--device', device, '--yes'],
      '',
      '/dev/sdz1 /media/me/bootfs vfat rw 0 0\n',
    );
    expect(mounted.code).toBe(1);
    expect(mounted.stderr).toContain('is mounted (/dev/sdz1 on /media/me/bootfs)');

    const system = await fakeDisk('sdw', { devOfPart: await rootDev() });
    const r = await flash(['--image', image, '--device', system, '--yes']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is a system disk \(sdw1 holds \/[;)]/);

    const lvm = await fakeDisk('sdv', { holders: ['dm-0'] });
    expect((await flash(['--image', image, '--device', lvm, '--yes'])).stderr).toContain(
      'sdv1 is in use by dm-0',
    );
    for (const d of [device, system, lvm]) expect((await stat(d)).blocks).toBe(0);
  });

  it('refuses a disk smaller than the image', async () => {
    const device = await fakeDisk('sdu');
    await writeFile(join(sys, 'block', 'sdu', 'size'), '1024\n');
    const r = await flash(['--image', image, '--device', device, '--yes']);
    expect(r.stderr).toMatch(/holds 0\.0 GB, the image is 0\.1 GB/);
  });
});
