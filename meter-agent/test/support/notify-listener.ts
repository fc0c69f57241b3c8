/** Test support: a real unix datagram socket receiving sd_notify messages (notify_listener.py). */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./notify_listener.py', import.meta.url));

export interface NotifyListener {
  /** Every datagram received so far, in order. */
  messages: string[];
  /** Resolves once `message` has been received (rejects after `ms`). */
  received(message: string, ms?: number): Promise<void>;
  close(): Promise<void>;
}

/** Listens on `address` (a path, or `@name` for an abstract socket), as systemd's NOTIFY_SOCKET. */
export async function listenForNotifications(address: string): Promise<NotifyListener> {
  const child = spawn('python3', [script, address], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: string[] = [];
  let buffered = '';
  let bound: () => void;
  const ready = new Promise<void>((resolve) => {
    bound = resolve;
  });
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop()!;
    for (const line of lines)
      if (line === 'bound') bound();
      else messages.push(line);
  });
  await Promise.race([ready, once(child, 'exit').then(() => Promise.reject(new Error('listener exited')))]);
  return {
    messages,
    async received(message, ms = 20_000) {
      for (
        const deadline = Date.now() + ms;
        !messages.includes(message);
        await new Promise((r) => setTimeout(r, 20))
      )
        if (Date.now() > deadline)
          throw new Error(`no ${message} within ${ms} ms (got ${messages.join(', ')})`);
    },
    async close() {
      if (child.exitCode !== null) return;
      child.kill();
      await once(child, 'exit');
    },
  };
}
