/** Test support: the built `tre` CLI as a child process (for kill -9 and restart tests). */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const treCli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface TreProcess {
  child: ChildProcess;
  port: number;
  log(): string;
  kill9(): Promise<void>;
  stop(): Promise<number | null>;
}

export async function spawnTre(
  pkiDir: string,
  dataDir: string,
  port = 0,
  extraArgs: string[] = [],
  /** Another Node binary, CLI file (e.g. of a copied release) or environment. */
  run: { node?: string; cli?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<TreProcess> {
  const child = spawn(
    run.node ?? process.execPath,
    [run.cli ?? treCli, 'start', '--pki', pkiDir, '--data', dataDir, '--port', String(port), ...extraArgs],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: run.env ?? process.env,
    },
  );
  let log = '';
  child.stderr!.on('data', (d) => {
    log += d;
  });
  const listening = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`TRE did not start: ${log}`)), 15_000);
    child.stderr!.on('data', () => {
      const line = log.split('\n').find((l) => l.includes('TRE listening'));
      if (line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { port: number }).port);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`TRE exited with ${code}: ${log}`));
    });
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    port: listening,
    log: () => log,
    async kill9() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
