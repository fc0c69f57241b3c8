/**
 * sd_notify through libsystemd, received by a real unix datagram socket (python3 standing in for
 * systemd): READY=1, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1; on a path and on an abstract
 * socket (NOTIFY_SOCKET=@name); nothing without NOTIFY_SOCKET.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { systemdNotifier } from '../src/sd-notify.js';
import { listenForNotifications } from './support/notify-listener.js';

const saved = { ...process.env };
afterEach(() => {
  // libsystemd reads the process environment: these tests set it (vitest runs each file in its own process).
  for (const name of ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID']) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
});

describe('systemd notifications', () => {
  for (const kind of ['path', 'abstract'] as const) {
    it(`sends READY=1, WATCHDOG=1 and STOPPING=1 to ${kind === 'path' ? 'a socket file' : 'an abstract socket'}`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'sd-notify-'));
      const address = kind === 'path' ? join(dir, 'notify.sock') : `@meter-agent-test-${process.pid}`;
      const systemd = await listenForNotifications(address);
      try {
        process.env.NOTIFY_SOCKET = address;
        process.env.WATCHDOG_USEC = '100000';
        process.env.WATCHDOG_PID = String(process.pid);
        const lines: string[] = [];
        const notifier = systemdNotifier((line) => lines.push(line));
        notifier.ready();
        await systemd.received('READY=1');
        await systemd.received('WATCHDOG=1');
        notifier.stopping();
        await systemd.received('STOPPING=1');
        expect(systemd.messages[0]).toBe('READY=1');
        expect(lines).toEqual([]);
      } finally {
        await systemd.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it('pings no watchdog that belongs to another process, and sends nothing outside systemd', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sd-notify-'));
    const address = join(dir, 'notify.sock');
    const systemd = await listenForNotifications(address);
    try {
      process.env.NOTIFY_SOCKET = address;
      process.env.WATCHDOG_USEC = '100000';
      process.env.WATCHDOG_PID = String(process.pid + 1);
      const notifier = systemdNotifier(() => {});
      notifier.ready();
      notifier.stopping();
      await systemd.received('STOPPING=1');
      expect(systemd.messages).toEqual(['READY=1', 'STOPPING=1']);
      delete process.env.NOTIFY_SOCKET;
      const outside = systemdNotifier(() => {});
      outside.ready();
      outside.stopping();
    } finally {
      await systemd.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
