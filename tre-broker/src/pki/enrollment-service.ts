/**
 * The regulator's zero-touch enrollment service (`tre pki serve-enrollment`): EST (RFC 7030) over
 * HTTPS, two operations.
 *
 *   GET  /.well-known/est/cacerts       the root CA: application/pkcs7-mime, base64 certs-only
 *   POST /.well-known/est/simpleenroll  body: base64 PKCS#10 (Content-Type application/pkcs10),
 *        Authorization: Basic base64(<meter id>:<enrollment token>)
 *        -> 200 application/pkcs7-mime; smime-type=certs-only, base64: the certificate
 *           `tre pki sign-csr --role meter --id <meter id>` would issue
 *        -> 401 (token unknown, for another meter, used, expired; no credential) or 400 (bad
 *           request), text/plain: what to do
 *
 * The token is spent only when a certificate is issued. Log lines carry the outcome and its code,
 * never the token, the meter id or the request.
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';
import type { Logger } from '../log.js';
import type { CertificateAuthority } from './certificate-authority.js';
import {
  type EnrollmentRefusal,
  judgeRequest,
  judgeToken,
  parseBasicCredential,
  tokenJustUsed,
} from './enrollment-rules.js';
import type { EnrollmentTokens } from './enrollment-tokens.js';

export const EST_PATH = '/.well-known/est';
const MAX_BODY_BYTES = 64 * 1024;

export interface EnrollmentServiceOptions {
  ca: CertificateAuthority;
  tokens: EnrollmentTokens;
  /** PEM key and certificate of the service's TLS identity. */
  tls: { key: string | Buffer; cert: string | Buffer };
  host: string;
  /** 0 picks a free port (`start()` says which). */
  port: number;
  log: Logger;
  now?: () => Date;
}

interface Reply {
  status: number;
  headers?: Record<string, string>;
  body: string;
}

const text = (status: number, body: string, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { 'Content-Type': 'text/plain; charset=utf-8', ...headers },
  body: `${body}\n`,
});

const certsOnly = (certs: x509.X509Certificate[], smime: boolean): Reply => ({
  status: 200,
  headers: {
    'Content-Type': smime ? 'application/pkcs7-mime; smime-type=certs-only' : 'application/pkcs7-mime',
    'Content-Transfer-Encoding': 'base64',
  },
  body: `${new x509.X509Certificates(certs).export('base64')}\n`,
});

class BodyTooLarge extends Error {}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new BodyTooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('latin1');
}

export class EnrollmentService {
  private server: Server | undefined;
  private readonly log: Logger;

  constructor(private readonly opts: EnrollmentServiceOptions) {
    this.log = opts.log.child({ module: 'enrollment' });
  }

  /** Listens; resolves with the address once it does. */
  async start(): Promise<AddressInfo> {
    const server = createServer({ ...this.opts.tls, minVersion: 'TLSv1.2' }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err: (err as Error).message }, 'enrollment request failed');
        if (!res.headersSent) this.send(res, text(500, 'internal error: try again later'));
        else res.destroy();
      });
    });
    server.requestTimeout = 30_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as AddressInfo;
    this.log.info({ host: address.address, port: address.port }, 'enrollment service listening');
    return address;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    this.log.info('enrollment service stopped');
  }

  private send(res: ServerResponse, reply: Reply): void {
    res.writeHead(reply.status, { ...reply.headers, 'Cache-Control': 'no-store' });
    res.end(reply.body);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const endpoints = `GET ${EST_PATH}/cacerts, POST ${EST_PATH}/simpleenroll`;
    let reply: Reply;
    if (path === `${EST_PATH}/cacerts`) {
      reply =
        req.method === 'GET' || req.method === 'HEAD'
          ? certsOnly([this.opts.ca.certificate], false)
          : text(405, `use GET ${EST_PATH}/cacerts`, { Allow: 'GET, HEAD' });
    } else if (path === `${EST_PATH}/simpleenroll`) {
      reply =
        req.method === 'POST'
          ? await this.enroll(req)
          : text(405, `use POST ${EST_PATH}/simpleenroll`, { Allow: 'POST' });
    } else {
      reply = text(404, `not found: this EST service answers ${endpoints}`);
    }
    this.send(res, reply);
  }

  private refused(refusal: EnrollmentRefusal): Reply {
    this.log.info({ status: refusal.status, code: refusal.code }, 'enrollment refused');
    return text(
      refusal.status,
      refusal.reason,
      refusal.status === 401 ? { 'WWW-Authenticate': 'Basic realm="tre-enrollment", charset="UTF-8"' } : {},
    );
  }

  private async enroll(req: IncomingMessage): Promise<Reply> {
    const now = this.opts.now?.() ?? new Date();
    const credential = parseBasicCredential(req.headers.authorization);
    if ('status' in credential) return this.refused(credential);
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/pkcs10')
      return text(415, 'send the certificate request as Content-Type: application/pkcs10 (base64 DER)');
    let body: string;
    try {
      body = await readBody(req);
    } catch (err) {
      if (err instanceof BodyTooLarge)
        return text(413, `a certificate request is at most ${MAX_BODY_BYTES} bytes`, { Connection: 'close' });
      throw err;
    }
    const { meterId, token } = credential;
    const tokenRefusal = judgeToken(await this.opts.tokens.find(token), meterId, now);
    if (tokenRefusal) return this.refused(tokenRefusal);
    const request = await judgeRequest(body, meterId);
    if ('status' in request) return this.refused(request);
    if (!(await this.opts.tokens.claim(token, now))) return this.refused(tokenJustUsed());
    let pem: string;
    try {
      pem = await this.opts.ca.signRequest(request.csr.toString('pem'), 'meter', meterId);
    } catch (err) {
      await this.opts.tokens.release(token);
      throw err;
    }
    this.log.info({ role: 'meter' }, 'enrolled: certificate issued, token spent');
    return certsOnly([new x509.X509Certificate(pem)], true);
  }
}
