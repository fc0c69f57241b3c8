/** Debian's mosquitto as the baseline broker, with the same PKI and mutual TLS. */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { waitForListening } from '@tre/hardware';

export interface Mosquitto {
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startMosquitto(
  dir: string,
  pki: { ca: string; cert: string; key: string },
  port: number,
): Promise<Mosquitto> {
  const conf = join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      `cafile ${pki.ca}`,
      `certfile ${pki.cert}`,
      `keyfile ${pki.key}`,
      'require_certificate true',
      'use_identity_as_username true',
      'allow_anonymous true',
      'persistence false',
      'max_queued_messages 100000',
      'log_type error',
      // Run as root (as this bench may), mosquitto would drop to the `mosquitto` user and lose access to the 0700 PKI dir.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      '',
    ].join('\n'),
  );
  const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  await waitForListening(child, port, {
    name: 'mosquitto',
    installHint: 'run npm run bench, whose setup installs Debian mosquitto',
    output: () => stderr,
  });
  return {
    port,
    process: child,
    async stop() {
      child.kill('SIGTERM');
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}
