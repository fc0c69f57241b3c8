/**
 * The TRE's operations endpoint on its own HTTP listener (`tre start --metrics-listen`, loopback
 * unless told otherwise): `/metrics` in the Prometheus text format, `/healthz` (200 while the
 * process answers) and `/readyz` (200 when every readiness check passes, else 503; the checks as
 * JSON either way). Nothing else is served.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TreMetrics } from './tre-metrics.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** `host:port` (`[::1]:9464` for IPv6); port 0 picks a free one. */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65_535)
    throw new TypeError(`${JSON.stringify(text)} is not host:port (e.g. 127.0.0.1:9464 or [::1]:9464)`);
  return { host: m[1] ?? m[2]!, port };
}

export interface MetricsServer {
  address: AddressInfo;
  close(): Promise<void>;
}

export async function serveMetrics(listen: ListenAddress, metrics: TreMetrics): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const answer = async (): Promise<[number, string, string]> => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return [405, 'text/plain', 'GET only\n'];
      if (path === '/metrics') return [200, metrics.registry.contentType, await metrics.registry.metrics()];
      if (path === '/healthz') return [200, 'text/plain', 'ok\n'];
      if (path === '/readyz') {
        const checks = metrics.readiness();
        const ready = Object.values(checks).every(Boolean);
        return [ready ? 200 : 503, 'application/json', `${JSON.stringify({ ready, checks })}\n`];
      }
      return [404, 'text/plain', 'not found: /metrics, /healthz, /readyz\n'];
    };
    answer().then(
      ([status, type, body]) => res.writeHead(status, { 'content-type': type }).end(body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  server.listen(listen.port, listen.host);
  await once(server, 'listening'); // rejects on 'error' (e.g. the port is taken)
  return {
    address: server.address() as AddressInfo,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections(); // a scraper's keep-alive connection would hold close() open
      await closed;
    },
  };
}
