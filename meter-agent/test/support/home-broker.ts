/**
 * The household's own MQTT broker (Home Assistant's, say) for the comfort-sensor tests: Debian's
 * mosquitto on a free loopback port when it is installed, else an in-process aedes.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitForListening } from '@tre/hardware';

const MOSQUITTO = '/usr/sbin/mosquitto';

export interface HomeBrokerFixture {
  url: string;
  kind: 'mosquitto' | 'aedes';
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startMosquitto(): Promise<HomeBrokerFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'home-mqtt-'));
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      'log_type error',
      // As root, mosquitto would switch to the `mosquitto` user, which may not exist here.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      '',
    ].join('\n'),
  );
  const child = spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  await waitForListening(child, port, {
    name: 'mosquitto',
    installHint: 'install Debian mosquitto, or remove it to test against aedes',
    output: () => stderr,
  });
  return {
    url: `mqtt://127.0.0.1:${port}`,
    kind: 'mosquitto',
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function startAedes(): Promise<HomeBrokerFixture> {
  const { Aedes } = await import('aedes');
  const broker = await Aedes.createBroker();
  const server = createServer((socket) => broker.handle(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    kind: 'aedes',
    async stop() {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export function startHomeBroker(): Promise<HomeBrokerFixture> {
  return existsSync(MOSQUITTO) ? startMosquitto() : startAedes();
}
