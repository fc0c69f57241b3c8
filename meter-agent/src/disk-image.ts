/**
 * Raspberry Pi OS disk images on this machine, without root and without mounting: streaming,
 * sparse-aware copies (`.img`, or `.img.xz` through Debian's `xz`), the partition table
 * (`sfdisk -J`), the FAT boot partition read and written in place with mtools
 * (`mcopy -i IMAGE@@OFFSET`), xz compression and `bmaptool create`. Programs run with execFile or
 * spawn, never a shell. An image is never held in memory.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { SeedFile } from './boot-seed.js';

const run = promisify(execFile);

export class DiskImageError extends Error {
  override readonly name = 'DiskImageError';
  constructor(
    readonly code: 'NOT_PI_OS' | 'TOOL_MISSING' | 'TOOL_FAILED',
    message: string,
  ) {
    super(message);
  }
}

/** Which Debian package has each program, for the message when one is missing. */
const PACKAGE_OF: Record<string, string> = {
  sfdisk: 'fdisk',
  mcopy: 'mtools',
  mmd: 'mtools',
  mdir: 'mtools',
  xz: 'xz-utils',
  bmaptool: 'bmap-tools',
};
const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1', MTOOLS_NO_VFAT: undefined };

async function tool(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { maxBuffer: 64 * 2 ** 20, env: opts.env ?? process.env });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new DiskImageError(
        'TOOL_MISSING',
        `${cmd} is not installed: apt-get install ${PACKAGE_OF[cmd] ?? cmd}`,
      );
    throw new DiskImageError('TOOL_FAILED', `${cmd} ${args[0] ?? ''}: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** Progress of a long copy as stderr lines: percent (when the total is known), MB done, MB/s. */
export class ProgressMeter {
  private last = 0;
  private readonly start: number;
  constructor(
    private readonly label: string,
    private readonly total: number | undefined,
    private readonly emit: (line: string) => void,
    private readonly now: () => number = () => performance.now(),
    private readonly everyMs = 1000,
  ) {
    this.start = now();
    this.last = this.start;
  }

  /** Reports `done` bytes: a line at most every `everyMs`, and always at the end (`final`). */
  update(done: number, final = false): void {
    const t = this.now();
    if (!final && t - this.last < this.everyMs) return;
    this.last = t;
    this.emit(formatProgress(this.label, done, this.total, (t - this.start) / 1000));
  }
}

export function formatProgress(
  label: string,
  done: number,
  total: number | undefined,
  seconds: number,
): string {
  const mb = (n: number) => (n / 1e6).toFixed(0);
  const rate = seconds > 0 ? `${(done / 1e6 / seconds).toFixed(1)} MB/s` : '- MB/s';
  const pct = total ? `${Math.min(100, Math.floor((done / total) * 100))}% ` : '';
  return `${label}: ${pct}${mb(done)}${total ? `/${mb(total)}` : ''} MB, ${rate}`;
}

const BLOCK = 4096;
const CHUNK = 1 << 20;
const ZERO = Buffer.alloc(BLOCK);

/** The uncompressed size of an .xz file, from its index (`xz --robot --list`). */
export async function xzUncompressedSize(file: string): Promise<number> {
  const out = await tool('xz', ['--robot', '--list', '--', file]);
  const totals = out.split('\n').find((l) => l.startsWith('totals\t'));
  const size = Number(totals?.split('\t')[4]);
  if (!Number.isSafeInteger(size))
    throw new DiskImageError('TOOL_FAILED', `xz --list ${file}: no uncompressed size`);
  return size;
}

/** The bytes of an image: an .img as it is, an .img.xz decompressed by `xz -dc`; with its uncompressed size. */
export async function openImageStream(
  file: string,
): Promise<{ stream: Readable; size: number; done: Promise<void> }> {
  if (!file.endsWith('.xz')) {
    const size = (await stat(file)).size;
    return { stream: createReadStream(file, { highWaterMark: CHUNK }), size, done: Promise.resolve() };
  }
  const size = await xzUncompressedSize(file);
  const child = spawn('xz', ['-dc', '--', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const done = new Promise<void>((resolve, reject) => {
    child.once('error', (e) =>
      reject(new DiskImageError('TOOL_MISSING', `xz: ${e.message}: apt-get install xz-utils`)),
    );
    child.once('close', (code) =>
      code === 0
        ? resolve()
        : reject(new DiskImageError('TOOL_FAILED', `xz -d ${file}: ${stderr.trim() || `exit ${code}`}`)),
    );
  });
  return { stream: child.stdout, size, done };
}

/**
 * Copies an image (.img or .img.xz) to `dest` as a sparse file: all-zero 4 KiB blocks are left
 * as holes, so free space costs no disk and `bmaptool create` sees it as unmapped. The file is
 * made 0600 (per-device images carry secrets).
 */
export async function copySparse(
  source: string,
  dest: string,
  progress: (line: string) => void,
): Promise<number> {
  const { stream, size, done } = await openImageStream(source);
  const meter = new ProgressMeter(`copy ${source.endsWith('.xz') ? '(xz -d) ' : ''}`.trim(), size, progress);
  const out = await open(dest, 'w', 0o600);
  let position = 0;
  let pending: Buffer = Buffer.alloc(0);
  const flush = async (buf: Buffer) => {
    // Writes each run of non-zero blocks; a block-aligned buffer keeps holes block-aligned.
    for (let i = 0; i < buf.length; ) {
      const end = Math.min(i + BLOCK, buf.length);
      if (buf.subarray(i, end).equals(end - i === BLOCK ? ZERO : Buffer.alloc(end - i))) {
        i = end;
        continue;
      }
      let j = end;
      while (j < buf.length) {
        const e = Math.min(j + BLOCK, buf.length);
        if (buf.subarray(j, e).equals(e - j === BLOCK ? ZERO : Buffer.alloc(e - j))) break;
        j = e;
      }
      await out.write(buf, i, j - i, position + i);
      i = j;
    }
    position += buf.length;
    meter.update(position);
  };
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      if (pending.length >= CHUNK) {
        const whole = pending.length - (pending.length % BLOCK);
        await flush(pending.subarray(0, whole));
        pending = Buffer.from(pending.subarray(whole));
      }
    }
    if (pending.length > 0) await flush(pending);
    await done;
    await out.truncate(position);
    await out.sync();
  } finally {
    await out.close();
  }
  meter.update(position, true);
  if (position !== size)
    throw new DiskImageError('TOOL_FAILED', `${source}: read ${position} bytes, its size says ${size}`);
  return position;
}

export interface Partition {
  start: number;
  size: number;
  type: string;
}
export interface PiLayout {
  /** Byte offset and size of the FAT boot partition (bootfs). */
  boot: { offset: number; size: number };
  /** Byte offset and size of the ext4 root partition (rootfs). */
  root: { offset: number; size: number };
}

const FAT_TYPES = new Set(['b', 'c', 'e', '6']);

/** Raspberry Pi OS's layout from `sfdisk -J` output: an msdos table, a FAT boot partition, then a Linux root. */
export function piLayout(sfdiskJson: string, what: string): PiLayout {
  const table = (
    JSON.parse(sfdiskJson) as {
      partitiontable?: { label?: string; sectorsize?: number; partitions?: Partition[] };
    }
  ).partitiontable;
  const sector = table?.sectorsize ?? 512;
  const parts = table?.partitions ?? [];
  const boot = parts.find((p) => FAT_TYPES.has(p.type.toLowerCase()));
  const root = parts.find((p) => p.type === '83');
  if (table?.label !== 'dos' || !boot || !root)
    throw new DiskImageError(
      'NOT_PI_OS',
      `${what}: not a Raspberry Pi OS image (an msdos partition table with a FAT boot partition and a Linux root partition)`,
    );
  return {
    boot: { offset: boot.start * sector, size: boot.size * sector },
    root: { offset: root.start * sector, size: root.size * sector },
  };
}

export async function readLayout(image: string): Promise<PiLayout> {
  return piLayout(await tool('sfdisk', ['-J', image]), image);
}

/** The FAT file system at `offset` in `image` (a file or a block device), as mtools names it. */
export const fatAt = (image: string, offset: number) => `${image}@@${offset}`;

/** Names in a directory of the FAT partition (`mdir -b`), e.g. '::/' or '::/meter-agent'. */
export async function listFat(fat: string, dir = '::/'): Promise<string[]> {
  const out = await tool('mdir', ['-i', fat, '-b', dir], { env: MTOOLS_ENV });
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map(
      (l) =>
        l
          .replace(/^::\/?/, '')
          .replace(/\/$/, '')
          .split('/')
          .pop()!,
    );
}

/** A file of the FAT partition, as bytes. */
export async function readFat(fat: string, path: string): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'meter-agent-fat-'));
  try {
    const local = join(dir, 'file');
    await tool('mcopy', ['-i', fat, '-n', `::/${path}`, local], { env: MTOOLS_ENV });
    const { readFile } = await import('node:fs/promises');
    return await readFile(local);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Checks the boot partition is Raspberry Pi OS's (config.txt and cmdline.txt at its root). */
export async function checkPiBoot(fat: string, what: string): Promise<void> {
  const names = new Set((await listFat(fat)).map((n) => n.toLowerCase()));
  for (const f of ['config.txt', 'cmdline.txt'])
    if (!names.has(f))
      throw new DiskImageError(
        'NOT_PI_OS',
        `${what}: the boot partition has no ${f}: not a Raspberry Pi OS image`,
      );
}

/**
 * Stages seed files in a private temporary directory (0700; secrets 0600) and removes it
 * afterwards, whatever happens.
 */
export async function stageSeed<T>(files: readonly SeedFile[], use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'meter-agent-seed-'));
  try {
    await writeSeedDir(dir, files);
    return await use(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes seed files under `dir` (for a per-device seed directory, or for staging). */
export async function writeSeedDir(dir: string, files: readonly SeedFile[]): Promise<void> {
  await chmod(dir, 0o700).catch(async () => mkdir(dir, { recursive: true, mode: 0o700 }));
  for (const f of files) {
    const dest = join(dir, f.path);
    await mkdir(dirname(dest), { recursive: true, mode: 0o700 });
    const mode = f.executable ? 0o700 : 0o600;
    if ('bytes' in f.source) await writeFile(dest, f.source.bytes, { mode });
    else await copyFile(f.source.file, dest);
    await chmod(dest, mode);
  }
}

/** Copies seed files onto the FAT partition, replacing files of the same name. */
export async function writeFat(fat: string, files: readonly SeedFile[]): Promise<void> {
  await stageSeed(files, async (dir) => {
    const dirs = [...new Set(files.flatMap((f) => parentsOf(f.path)))].sort();
    for (const d of dirs) {
      const parent = d.includes('/') ? d.slice(0, d.lastIndexOf('/')) : '';
      const existing = await listFat(fat, `::/${parent}`);
      if (!existing.includes(d.split('/').pop()!))
        await tool('mmd', ['-i', fat, `::/${d}`], { env: MTOOLS_ENV });
    }
    for (const f of files)
      await tool('mcopy', ['-i', fat, '-o', '-n', '-D', 'o', join(dir, f.path), `::/${f.path}`], {
        env: MTOOLS_ENV,
      });
  });
}

function parentsOf(path: string): string[] {
  const parts = path.split('/').slice(0, -1);
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

/** SHA-256 of a stream's bytes, passed through. */
export function hashing(): { transform: Transform; digest: () => string; bytes: () => number } {
  const hash = createHash('sha256');
  let n = 0;
  return {
    transform: new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        n += chunk.length;
        cb(null, chunk);
      },
    }),
    digest: () => hash.digest('hex'),
    bytes: () => n,
  };
}

/** SHA-256 and size of a file, read once. */
export async function sha256File(
  file: string,
  progress?: (line: string) => void,
): Promise<{ sha256: string; size: number }> {
  const size = (await stat(file)).size;
  const meter = progress ? new ProgressMeter('sha256', size, progress) : undefined;
  const h = hashing();
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      meter?.update(done);
      cb(null, chunk);
    },
  });
  await pipeline(createReadStream(file, { highWaterMark: CHUNK }), counter, h.transform, async (s) => {
    for await (const _ of s);
  });
  meter?.update(done, true);
  return { sha256: h.digest(), size };
}

/**
 * Compresses `source` to `dest` with `xz -T0` (dest made 0600), showing progress; returns the
 * SHA-256 and size of both the uncompressed and the compressed bytes (for Imager's list).
 */
export async function compressXz(
  source: string,
  dest: string,
  progress: (line: string) => void,
): Promise<{ extract: { sha256: string; size: number }; file: { sha256: string; size: number } }> {
  const size = (await stat(source)).size;
  const meter = new ProgressMeter('compress (xz)', size, progress);
  const child = spawn('xz', ['-T0', '-c', '-z', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', (e) =>
      reject(new DiskImageError('TOOL_MISSING', `xz: ${e.message}: apt-get install xz-utils`)),
    );
    child.once('close', (code) =>
      code === 0
        ? resolve()
        : reject(new DiskImageError('TOOL_FAILED', `xz: ${stderr.trim() || `exit ${code}`}`)),
    );
  });
  const input = hashing();
  const output = hashing();
  let done = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      meter.update(done);
      cb(null, chunk);
    },
  });
  await Promise.all([
    pipeline(createReadStream(source, { highWaterMark: CHUNK }), counter, input.transform, child.stdin),
    pipeline(child.stdout, output.transform, createWriteStream(dest, { mode: 0o600 })),
    exited,
  ]);
  meter.update(done, true);
  return {
    extract: { sha256: input.digest(), size: input.bytes() },
    file: { sha256: output.digest(), size: output.bytes() },
  };
}

/** `bmaptool create`: the block map of a sparse image, for `bmaptool copy`. */
export async function createBmap(image: string, bmap: string): Promise<void> {
  await tool('bmaptool', ['create', '-o', bmap, image]);
}

/** The package's name, version and architecture (`dpkg-deb -f`). */
export async function debFields(deb: string): Promise<{ name: string; version: string; arch: string }> {
  const out = await tool('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Architecture']);
  const field = (k: string) => out.match(new RegExp(`^${k}: (.+)$`, 'm'))?.[1]?.trim() ?? '';
  return { name: field('Package'), version: field('Version'), arch: field('Architecture') };
}
