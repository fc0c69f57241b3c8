/**
 * A TCP proxy on loopback whose traffic can be held (test support): `pause` stops forwarding in
 * both directions without closing anything, so a client's requests go unanswered, as while
 * JetStream elects a leader; `resume` lets what was held through. Bytes are forwarded untouched
 * (TLS passes end to end).
 */
import { createConnection, createServer, type Socket } from 'node:net';

export interface PausableProxy {
  /** `tls://127.0.0.1:<port>`: connect here instead of the target. */
  url: string;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

export async function pausableProxy(target: string): Promise<PausableProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  /** What arrived while paused, per destination, in order. */
  const held: [Socket, Buffer][] = [];
  let paused = false;
  const forward = (from: Socket, to: Socket) =>
    from.on('data', (chunk: Buffer) => (paused ? held.push([to, chunk]) : to.write(chunk)));
  const server = createServer((client) => {
    const upstream = createConnection({ host: hostname, port: Number(port) });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', end).on('close', end);
    }
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('the proxy has no TCP address');
  return {
    url: `tls://127.0.0.1:${address.port}`,
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      for (const [to, chunk] of held.splice(0)) if (!to.destroyed) to.write(chunk);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}
