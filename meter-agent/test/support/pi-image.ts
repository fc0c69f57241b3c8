/**
 * A small image with Raspberry Pi OS's layout, made from scratch without root: an msdos table
 * (sfdisk on a sparse file), a FAT32 bootfs (mkfs.vfat --offset) with config.txt and cmdline.txt,
 * an ext4 rootfs (mkfs.ext4 -E offset=); and a stand-in meter-agent arm64 .deb (dpkg-deb).
 */
import { execFile } from 'node:child_process';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SECTOR = 512;
export const BOOT_START = 8192;
const BOOT_SECTORS = 81_920; // 40 MiB: FAT32 with 512-byte clusters needs more than 65525 of them
const ROOT_START = BOOT_START + BOOT_SECTORS;
const IMAGE_BYTES = 64 * 2 ** 20;

export async function makePiImage(file: string): Promise<void> {
  await writeFile(file, '');
  await truncate(file, IMAGE_BYTES);
  await run('sh', [
    '-c',
    `printf 'label: dos\\nstart=${BOOT_START}, size=${BOOT_SECTORS}, type=c\\nstart=${ROOT_START}, type=83\\n' | sfdisk -q "$1"`,
    'sh',
    file,
  ]);
  await run('mkfs.vfat', [
    '-F',
    '32',
    '-s',
    '1',
    '-n',
    'BOOTFS',
    '--offset',
    String(BOOT_START),
    file,
    String(BOOT_SECTORS / 2),
  ]);
  await run('mkfs.ext4', [
    '-q',
    '-F',
    '-L',
    'rootfs',
    '-E',
    `offset=${ROOT_START * SECTOR}`,
    file,
    `${(IMAGE_BYTES / SECTOR - ROOT_START) / 2}k`,
  ]);
  const fat = `${file}@@${BOOT_START * SECTOR}`;
  const dir = `${file}.boot`;
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.txt'), '[all]\narm_64bit=1\n');
  await writeFile(
    join(dir, 'cmdline.txt'),
    'console=serial0,115200 console=tty1 root=PARTUUID=0-02 rootfstype=ext4 rootwait\n',
  );
  await writeFile(join(dir, 'user-data'), '#cloud-config\n# the image stock user-data\n');
  await writeFile(join(dir, 'meta-data'), 'dsmode: local\ninstance_id: rpios-image\n');
  await run(
    'mcopy',
    ['-i', fat, ...['config.txt', 'cmdline.txt', 'user-data', 'meta-data'].map((f) => join(dir, f)), '::/'],
    {
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1' },
    },
  );
}

/** A stand-in meter-agent_0.1.0_arm64.deb (the real one takes minutes to build: packaging.test.ts). */
export async function makeFakeDeb(dir: string): Promise<string> {
  const stage = join(dir, 'deb-stage');
  await mkdir(join(stage, 'DEBIAN'), { recursive: true });
  await writeFile(
    join(stage, 'DEBIAN', 'control'),
    'Package: meter-agent\nVersion: 0.1.0\nArchitecture: arm64\nMaintainer: test <t@example.invalid>\nDescription: stand-in\n',
  );
  const deb = join(dir, 'meter-agent_0.1.0_arm64.deb');
  await run('dpkg-deb', ['--build', '--root-owner-group', stage, deb]);
  return deb;
}

export const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

/** Boot partition offset of an image, from `sfdisk -J`. */
export async function bootOffset(image: string): Promise<number> {
  const { stdout } = await run('sfdisk', ['-J', image]);
  const t = JSON.parse(stdout) as { partitiontable: { partitions: { start: number; type: string }[] } };
  return t.partitiontable.partitions.find((p) => p.type === 'c')!.start * SECTOR;
}

/** A file of the image's boot partition (mcopy to stdout), or undefined when absent. */
export async function bootFile(image: string, path: string): Promise<Buffer | undefined> {
  try {
    const { stdout } = await promisify(execFile)(
      'mcopy',
      ['-n', '-i', `${image}@@${await bootOffset(image)}`, `::/${path}`, '-'],
      {
        env: mtoolsEnv,
        encoding: 'buffer',
        maxBuffer: 64 * 2 ** 20,
      },
    );
    return stdout;
  } catch {
    return undefined;
  }
}
