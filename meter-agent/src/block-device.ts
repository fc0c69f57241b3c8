/**
 * `meter-agent flash`: the target disk as Linux describes it (/sys/block/<dev>: size, model,
 * removable, partitions and their holders; /proc/mounts; the devices holding / and /boot), the
 * rules that refuse a mounted or system disk (pure), and the streaming write. The sysfs root,
 * the mounts text and the system paths are injected, so a regular file stands in for a disk in
 * tests (a real block device cannot be tested on a build machine).
 */
import { constants, existsSync } from 'node:fs';
import { open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import { openImageStream, ProgressMeter, xzUncompressedSize } from './disk-image.js';

export class FlashError extends Error {
  override readonly name = 'FlashError';
  constructor(
    readonly code: 'NOT_A_DISK' | 'MOUNTED' | 'SYSTEM_DISK' | 'TOO_SMALL' | 'DECLINED',
    message: string,
  ) {
    super(message);
  }
}

export interface BlockDeviceInfo {
  /** The device as given, and its kernel name (sdb, mmcblk0). */
  path: string;
  name: string;
  sizeBytes: number;
  model: string;
  removable: boolean;
  /** "device on mountpoint" for each mounted partition (or the disk itself). */
  mounted: string[];
  /** Why it is a system disk (holds /, /boot, or a partition used by device-mapper/RAID), if it is. */
  system: string[];
}

export interface InspectOptions {
  /** Default /sys. */
  sysRoot?: string;
  /** The text of /proc/mounts (default: read it). */
  mounts?: string;
  /** Paths whose file system must not be on the target (default /, /boot, /boot/firmware, /boot/efi). */
  systemPaths?: string[];
}

const unescapeMount = (s: string) =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/** major:minor of the device a path's file system is on. */
async function deviceNumber(path: string): Promise<string | undefined> {
  try {
    const dev = (await stat(path, { bigint: true })).dev;
    const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
    const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
    return `${major}:${minor}`;
  } catch {
    return undefined;
  }
}

const readTrim = async (p: string) => (await readFile(p, 'utf8')).trim();

/** Reads what the kernel says about the disk `device` (e.g. /dev/sdb or a /dev/disk/by-id link). */
export async function inspectBlockDevice(device: string, o: InspectOptions = {}): Promise<BlockDeviceInfo> {
  const sysRoot = o.sysRoot ?? '/sys';
  const real = await realpath(device);
  const name = basename(real);
  const sys = join(sysRoot, 'block', name);
  if (!existsSync(join(sys, 'size')))
    throw new FlashError(
      'NOT_A_DISK',
      `${device} is not a whole disk (no ${sys}); give the disk, e.g. /dev/sdb, not a partition`,
    );
  const sizeBytes = Number(await readTrim(join(sys, 'size'))) * 512;
  const model = existsSync(join(sys, 'device', 'model'))
    ? await readTrim(join(sys, 'device', 'model'))
    : 'unknown model';
  const removable = existsSync(join(sys, 'removable')) && (await readTrim(join(sys, 'removable'))) === '1';
  const partitions = (await readdir(sys)).filter(
    (e) => e.startsWith(name) && existsSync(join(sys, e, 'partition')),
  );
  const nodes = [name, ...partitions];
  const devNumbers = new Map<string, string>();
  const system: string[] = [];
  for (const n of nodes) {
    const dir = n === name ? sys : join(sys, n);
    if (existsSync(join(dir, 'dev'))) devNumbers.set(await readTrim(join(dir, 'dev')), n);
    const holders = existsSync(join(dir, 'holders')) ? await readdir(join(dir, 'holders')) : [];
    if (holders.length > 0) system.push(`${n} is in use by ${holders.join(', ')} (LVM, RAID or encryption)`);
  }
  const mountsText = o.mounts ?? (await readFile('/proc/mounts', 'utf8'));
  const mounted: string[] = [];
  for (const line of mountsText.split('\n')) {
    const [source, target] = line.split(' ');
    if (!source?.startsWith('/dev/') || !target) continue;
    let n = basename(source);
    try {
      n = basename(await realpath(source)); // /dev/disk/by-uuid/... and the like
    } catch {}
    if (nodes.includes(n)) mounted.push(`${source} on ${unescapeMount(target)}`);
  }
  for (const p of o.systemPaths ?? ['/', '/boot', '/boot/firmware', '/boot/efi']) {
    const num = await deviceNumber(p);
    const n = num && devNumbers.get(num);
    if (n) system.push(`${n} holds ${p}`);
  }
  return { path: device, name, sizeBytes, model, removable, mounted, system };
}

/** Why the disk must not be written (undefined: it may be, after confirmation). Pure. */
export function flashRefusal(d: BlockDeviceInfo, imageBytes: number): FlashError | undefined {
  if (d.system.length > 0)
    return new FlashError(
      'SYSTEM_DISK',
      `${d.path} is a system disk (${d.system.join('; ')}): refusing to write it`,
    );
  if (d.mounted.length > 0)
    return new FlashError(
      'MOUNTED',
      `${d.path} is mounted (${d.mounted.join('; ')}): unmount it first (udisksctl unmount -b ...)`,
    );
  if (imageBytes > d.sizeBytes)
    return new FlashError('TOO_SMALL', `${d.path} holds ${gb(d.sizeBytes)}, the image is ${gb(imageBytes)}`);
  return undefined;
}

export const gb = (n: number) => `${(n / 1e9).toFixed(1)} GB`;

/** The question the user answers by typing the device's name. */
export function confirmationPrompt(d: BlockDeviceInfo): string {
  return `This erases everything on ${d.path}: ${gb(d.sizeBytes)}, ${d.model}${d.removable ? ', removable' : ', NOT removable (an internal or USB disk?)'}.\nType ${d.name} to write the image: `;
}

/** The image's uncompressed size (for the size check before anything is written). */
export async function imageSize(image: string): Promise<number> {
  return image.endsWith('.xz') ? xzUncompressedSize(image) : (await stat(image)).size;
}

/**
 * Writes the image (.img or .img.xz) to the device from its first byte, every block (the card's
 * old data does not survive in free space), then fsyncs. A block device is opened O_EXCL, which
 * Linux refuses while any of it is mounted.
 */
export async function writeImageToDevice(
  image: string,
  device: string,
  progress: (line: string) => void,
): Promise<number> {
  const isBlock = (await stat(device)).isBlockDevice();
  const out = await open(device, constants.O_WRONLY | (isBlock ? constants.O_EXCL : 0));
  let stream: Readable | undefined;
  try {
    const src = await openImageStream(image);
    stream = src.stream;
    const meter = new ProgressMeter(`write ${device}`, src.size, progress);
    let position = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      await out.write(chunk, 0, chunk.length, position);
      position += chunk.length;
      meter.update(position);
    }
    await src.done;
    await out.sync();
    meter.update(position, true);
    return position;
  } finally {
    stream?.destroy();
    await out.close();
  }
}
