/**
 * A local control socket (`<stateDir>/control.sock`, mode 0600) through which `meter-agent bids
 * approve|decline|override` reaches the running daemon. One JSON request per connection, one JSON
 * answer.
 */
import { chmodSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';

export type ControlRequest =
  | { cmd: 'approve' | 'decline'; bidId: string }
  /** The household takes back its accepted shed of `eventId` (`HouseholdAgent.override`). */
  | { cmd: 'override'; eventId: string };
export type ControlAnswer = { ok: true; detail?: unknown } | { ok: false; error: string };

export function serveControl(path: string, handle: (req: ControlRequest) => ControlAnswer): Server {
  rmSync(path, { force: true });
  const server = createServer((socket) => {
    let buf = '';
    socket.on('data', (d) => {
      buf += d;
      if (buf.length > 4096) socket.destroy();
      if (!buf.includes('\n')) return;
      let answer: ControlAnswer;
      try {
        answer = handle(JSON.parse(buf) as ControlRequest);
      } catch (err) {
        answer = { ok: false, error: (err as Error).message };
      }
      socket.end(`${JSON.stringify(answer)}\n`);
    });
  });
  server.listen(path, () => chmodSync(path, 0o600));
  return server;
}

export function sendControl(path: string, req: ControlRequest): Promise<ControlAnswer> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    let buf = '';
    socket.on('connect', () => socket.write(`${JSON.stringify(req)}\n`));
    socket.on('data', (d) => {
      buf += d;
    });
    socket.on('end', () => resolve(JSON.parse(buf) as ControlAnswer));
    socket.on('error', (err) => reject(new Error(`the agent is not running (no ${path}): ${err.message}`)));
  });
}
