/**
 * A software TPM (Debian `swtpm`) on free loopback ports, for laptops, tests and the demo: the same
 * code path as a TPM HAT (`device:/dev/tpmrm0`), only the TCTI differs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForListening } from '../process/wait-for-listening.js';

export interface Swtpm {
  tcti: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
  /** SIGKILL, for fault tests. */
  kill(): void;
}

async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const { port: p } = s.address() as { port: number };
        s.close(() => resolve(p));
      });
      s.once('error', reject);
    });
    const ctrlFree = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port + 1, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (port < 65_000 && ctrlFree) return port;
  }
  throw new Error('no two consecutive free ports for swtpm');
}

export async function startSwtpm(opts: { dir?: string; keep?: boolean } = {}): Promise<Swtpm> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'swtpm-'));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const port = await freePortPair();
  let child: ChildProcess;
  try {
    child = spawn(
      'swtpm',
      [
        'socket',
        '--tpm2',
        '--server',
        `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl',
        `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        '--tpmstate',
        `dir=${dir}`,
        '--flags',
        'not-need-init,startup-clear',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    throw new Error(`cannot start swtpm (${(err as Error).message}); install Debian swtpm`);
  }
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  await waitForListening(child, port, {
    name: 'swtpm',
    installHint: 'install Debian swtpm (npm test does)',
    output: () => stderr,
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const cleanup = () => {
    if (!opts.keep && !opts.dir) rmSync(dir, { recursive: true, force: true });
  };
  return {
    tcti: `swtpm:host=127.0.0.1,port=${port}`,
    port,
    dir,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      cleanup();
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}
