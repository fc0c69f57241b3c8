/**
 * Waiting for a child process (swtpm, mosquitto, a TRE) to accept TCP connections on loopback,
 * with the errors a user can act on: not installed, exited (with its output), or too slow.
 */
import type { ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';

export function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function waitForListening(
  child: ChildProcess,
  port: number,
  opts: { name: string; installHint: string; output: () => string; timeoutMs?: number },
): Promise<void> {
  const spawnFailed = new Promise<never>((_, reject) =>
    child.once('error', (err) =>
      reject(new Error(`cannot start ${opts.name} (${err.message}); ${opts.installHint}`)),
    ),
  );
  spawnFailed.catch(() => {}); // raced below; never an unhandled rejection once we stop waiting
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    if (await Promise.race([portOpen(port), spawnFailed])) return;
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error(`${opts.name} did not start: ${opts.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
