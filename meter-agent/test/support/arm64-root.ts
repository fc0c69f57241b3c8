/**
 * Test support: a Debian arm64 root file system (from arm64-rootfs.sh's cached tarball) unpacked
 * into a scratch directory, and programs run inside it with chroot (through qemu-user-static's
 * binfmt handler). /proc and /dev are mounted in a private mount namespace (unshare), so they vanish
 * with the process and never show up, or stay behind, on the machine. Needs root.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const prepareScript = fileURLToPath(new URL('./arm64-rootfs.sh', import.meta.url));

/** The cached tarball's path (TRE_ARM64_ROOTFS, or made first if missing: minutes, progress to stderr). */
export async function arm64RootTarball(): Promise<string> {
  if (process.env.TRE_ARM64_ROOTFS) return process.env.TRE_ARM64_ROOTFS;
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [prepareScript], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve(out.trim().split('\n').pop()!)
        : reject(new Error(`arm64-rootfs.sh exited ${code}`)),
    );
  });
}

export async function unpackRoot(tarball: string, root: string): Promise<void> {
  await exec('mkdir', ['-p', root]);
  await exec('tar', ['-C', root, '--numeric-owner', '-xpf', tarball]);
}

export interface RootResult {
  code: number;
  stdout: string;
  stderr: string;
}

const ROOT_ENV = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
  DEBIAN_FRONTEND: 'noninteractive',
};

const IN_ROOT = [
  'r="$1"; shift',
  'mount -t proc proc "$r/proc"',
  'mount --rbind /dev "$r/dev"',
  'exec chroot "$r" "$@"',
].join(' && ');

/** `argv` run inside the root, as root, with a clean environment; never throws on a non-zero exit. */
export async function inRoot(
  root: string,
  argv: string[],
  env: Record<string, string> = {},
): Promise<RootResult> {
  try {
    const { stdout, stderr } = await exec(
      'unshare',
      ['--mount', '--propagation', 'private', '--', 'sh', '-c', IN_ROOT, 'sh', root, ...argv],
      {
        env: { ...ROOT_ENV, ...env },
        maxBuffer: 32 * 2 ** 20,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** `argv` started inside the root, for a program that runs until stopped (its output as it comes). */
export function spawnInRoot(root: string, argv: string[], env: Record<string, string> = {}): ChildProcess {
  return spawn(
    'unshare',
    ['--mount', '--propagation', 'private', '--', 'sh', '-c', IN_ROOT, 'sh', root, ...argv],
    {
      env: { ...ROOT_ENV, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
}

/** Removes the root, after checking nothing is mounted below it (a leaked /dev bind must not be emptied). */
export async function removeRoot(root: string): Promise<void> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  if (mounts.split('\n').some((l) => l.split(' ')[4]?.startsWith(root)))
    throw new Error(`${root} still has mounts below it: not removed`);
  await rm(root, { recursive: true, force: true });
}
