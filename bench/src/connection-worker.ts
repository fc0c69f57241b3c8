/**
 * A load-generator process for the `connections` benchmark: opens its share of mutual-TLS MQTT
 * sessions (a minimal MQTT 3.1.1 CONNECT over node:tls, lighter than a full client), holds them,
 * and reports to its parent: {"connected": n, "failed": n, "ms": elapsed} once all have answered.
 * Argument: a JSON file {url, port, ca, sessions: [{key, cert, clientId}]} (PEM strings).
 */
import { readFileSync } from 'node:fs';
import { connect, type TLSSocket } from 'node:tls';

interface Job {
  port: number;
  ca: string;
  concurrency: number;
  sessions: { key: string; cert: string; clientId: string }[];
}

function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId);
  const variable = Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x02, 0x58]); // MQTT, level 4, clean, keepalive 600 s
  const payload = Buffer.concat([Buffer.from([id.length >> 8, id.length & 0xff]), id]);
  const remaining = variable.length + payload.length;
  return Buffer.concat([Buffer.from([0x10, remaining]), variable, payload]);
}

const job = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Job;
const held: TLSSocket[] = [];
let connected = 0;
let failed = 0;
const start = performance.now();

function open(s: Job['sessions'][number]): Promise<void> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      if (ok) connected++;
      else failed++;
      resolve();
    };
    const socket = connect({
      host: '127.0.0.1',
      port: job.port,
      key: s.key,
      cert: s.cert,
      ca: job.ca,
      servername: 'localhost',
    });
    socket.once('secureConnect', () => socket.write(connectPacket(s.clientId)));
    socket.once('data', (d: Buffer) => {
      const ok = d[0] === 0x20 && d[3] === 0x00;
      if (ok) held.push(socket);
      else socket.destroy();
      finish(ok);
    });
    socket.on('error', () => finish(false));
    socket.once('close', () => finish(false));
  });
}

let next = 0;
await Promise.all(
  Array.from({ length: job.concurrency }, async () => {
    while (next < job.sessions.length) await open(job.sessions[next++]!);
  }),
);
process.send?.({ connected, failed, ms: performance.now() - start });
process.on('message', () => {
  for (const s of held) s.destroy();
  process.exit(0);
});
