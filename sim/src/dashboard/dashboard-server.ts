/**
 * The demo's live dashboard: a static page plus a Server-Sent Events stream of snapshots. The page
 * draws its charts as plain SVG; no build step, no page reload.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pageDir = fileURLToPath(new URL('../../public/', import.meta.url));

const FILES: Record<string, [string, string]> = {
  '/': [join(pageDir, 'index.html'), 'text/html; charset=utf-8'],
  '/dashboard.js': [join(pageDir, 'dashboard.js'), 'text/javascript; charset=utf-8'],
};

export class DashboardServer {
  private readonly clients = new Set<ServerResponse>();
  private last: unknown;

  private constructor(readonly server: Server) {}

  static async start(port = 0, host = '127.0.0.1'): Promise<DashboardServer> {
    let self: DashboardServer;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      if (path === '/events') return self.subscribe(res);
      if (path === '/favicon.ico') return void res.writeHead(204).end();
      if (path === '/snapshot') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify(self.last ?? null));
      }
      const file = FILES[path];
      if (!file) {
        res.writeHead(404).end('not found');
        return;
      }
      readFile(file[0]).then(
        (body) => res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' }).end(body),
        () => res.writeHead(500).end(),
      );
    });
    self = new DashboardServer(server);
    await new Promise<void>((resolve) => server.listen(port, host, resolve));
    return self;
  }

  get url(): string {
    const { address, port } = this.server.address() as AddressInfo;
    return `http://${address}:${port}/`;
  }

  private subscribe(res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    res.write(': connected\n\n');
    if (this.last) res.write(`data: ${JSON.stringify(this.last)}\n\n`);
    this.clients.add(res);
    res.on('close', () => this.clients.delete(res));
  }

  /** Sends a snapshot to every open page. */
  publish(snapshot: unknown): void {
    this.last = snapshot;
    const line = `data: ${JSON.stringify(snapshot)}\n\n`;
    for (const c of this.clients) c.write(line);
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.end();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
