/**
 * A local nats-server cluster for development and tests (issue 21; later `tre cluster`): N nodes on
 * free loopback ports, one config file and JetStream store per node under `dir`, TLS everywhere.
 * NATS is outside the trust boundary: it only carries sealed messages between attested shards.
 *
 * Clients authenticate with mutual TLS and `verify_and_map`: nats-server maps the client
 * certificate to a user name. Tested against nats-server 2.9.10, it tries in this order and takes
 * the first name that is a configured user: each SAN email, each SAN DNS name, each SAN URI, then
 * the subject DN (any RDN order); IP SANs are never used. A user is therefore always named by the
 * certificate's SAN URI, `urn:tre:<role>:<id>` (a TRE shard: `urn:tre:tre:<shard>`, set by the
 * regulator, one per certificate), and `startNatsCluster` refuses any other name: every TRE
 * certificate carries DNS `localhost`, and a DNS host name (which a TRE may ask for in its
 * certificate request) must never be able to match a user. The CA refuses DNS names with ':' (see
 * `hostName`), so no DNS SAN can read as a `urn:tre:` user.
 *
 * Routes between the nodes use TLS (the servers' certificate, `CertificateAuthority.issueNatsServer`,
 * serverAuth and clientAuth) and a random route password written only into the 0600 config
 * files: a TRE certificate from the same CA alone cannot join as a route and read every subject.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { formatIdentity, parseIdentity, shardPermissions } from '@tre/protocol';
import type { CertificateAuthority } from '../pki/certificate-authority.js';

export interface NatsPermissions {
  publish: string[];
  subscribe: string[];
  /**
   * Lets the user publish replies to the reply subjects of requests it received (nats-server
   * `allow_responses`): at most `max` replies per request, within `expiresMs`.
   */
  allowResponses?: { max: number; expiresMs: number };
}

export interface NatsUser {
  /** The name nats-server maps the client certificate to under verify_and_map: its SAN URI. */
  user: string;
  /** What the user may publish and subscribe to (everything else is denied), or everything. */
  permissions: NatsPermissions | 'admin';
}

export interface NatsNode {
  name: string;
  clientUrl: string;
  clientPort: number;
  clusterPort: number;
  readonly alive: boolean;
  /** Signals the server (default SIGTERM) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again (stopping it first if alive) with the same ports and store; waits until ready. */
  restart(): Promise<void>;
}

export interface NatsCluster {
  urls: string[];
  nodes: NatsNode[];
  /** Kills every node and waits for each to exit. */
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /** Where the config files and JetStream stores go (one sub-directory per node). */
  dir: string;
  /** How many nodes (default 3). */
  nodes?: number;
  /** The servers' certificate (serverAuth and clientAuth: also used by the routes) and the CA. */
  tls: { caFile: string; certFile: string; keyFile: string };
  users: NatsUser[];
  /** JetStream on every node (default true); start waits until its meta leader is elected. */
  jetStream?: boolean;
  /** Each line the servers log, prefixed with the node's name. */
  log?: (line: string) => void;
  /** The nats-server executable (default `nats-server` on the PATH). */
  binary?: string;
  /** How long start and restart wait for readiness (default 30 s). */
  readyTimeoutMs?: number;
}

const DEFAULTS = {
  nodes: 3,
  jetStream: true,
  binary: 'nats-server',
  readyTimeoutMs: 30_000,
  log: (_line: string) => {},
  /** How long a node may take to exit on SIGTERM before it is killed. */
  exitTimeoutMs: 10_000,
  clusterName: 'tre-shards',
  routeUser: 'route',
  /** The largest message a node takes (NATS's default is 1 MiB): room for an 8 MiB bulk MQTT payload relayed. */
  maxPayloadBytes: 24 * 1024 * 1024,
} as const;

const HOST = '127.0.0.1';
const LOG_TAIL = 30;

export class NatsClusterError extends Error {
  override readonly name = 'NatsClusterError';
  constructor(
    readonly code: 'NATS_SERVER_MISSING' | 'NATS_START_FAILED' | 'NATS_NOT_READY' | 'INVALID_ARGUMENT',
    message: string,
  ) {
    super(message);
  }
}

/** A shard's user: its TRE certificate's `urn:tre:tre:<shard>`, with `shardPermissions(shard)`. */
export function shardUser(shard: string): NatsUser {
  return {
    user: formatIdentity({ role: 'tre', id: shard }),
    // Another shard's hello request names this shard's inbox as its reply subject, which this
    // shard may not otherwise publish to: one reply per request, within a minute.
    permissions: { allowResponses: { max: 1, expiresMs: 60_000 }, ...shardPermissions(shard) },
  };
}

/** A user allowed everything, mapped from the regulator's client certificate `urn:tre:regulator:<id>`. */
export function adminUser(regulatorId: string): NatsUser {
  return { user: formatIdentity({ role: 'regulator', id: regulatorId }), permissions: 'admin' };
}

/** Refuses users whose name is not a SAN URI identity, or named twice. */
export function checkUsers(users: NatsUser[]): void {
  if (users.length === 0) throw new NatsClusterError('INVALID_ARGUMENT', 'give at least one NATS user');
  const seen = new Set<string>();
  for (const { user } of users) {
    try {
      parseIdentity(user);
    } catch {
      throw new NatsClusterError(
        'INVALID_ARGUMENT',
        `NATS user ${JSON.stringify(user)} is not a urn:tre:<role>:<id> identity; name users by their certificate's SAN URI (shardUser, adminUser): nats-server maps DNS names first, and any TRE certificate may name a host`,
      );
    }
    if (seen.has(user)) throw new NatsClusterError('INVALID_ARGUMENT', `NATS user ${user} is given twice`);
    seen.add(user);
  }
}

interface NodeLayout {
  name: string;
  clientPort: number;
  clusterPort: number;
  httpPort: number;
  storeDir: string;
}

const q = (s: string) => JSON.stringify(s);
const list = (items: string[]) => `[${items.map(q).join(', ')}]`;

function userBlock({ user, permissions }: NatsUser): string {
  if (permissions === 'admin') return `    { user: ${q(user)} }`;
  const responses = permissions.allowResponses
    ? `, allow_responses: { max: ${permissions.allowResponses.max}, expires: "${Math.ceil(permissions.allowResponses.expiresMs)}ms" }`
    : '';
  return `    { user: ${q(user)}, permissions: { publish: { allow: ${list(permissions.publish)} }, subscribe: { allow: ${list(permissions.subscribe)} }${responses} } }`;
}

/** One node's nats-server configuration. */
export function natsConfig(o: {
  node: NodeLayout;
  peers: NodeLayout[];
  tls: NatsClusterOptions['tls'];
  users: NatsUser[];
  jetStream: boolean;
  routePassword: string;
}): string {
  const tls = (verify: string) =>
    `{ cert_file: ${q(resolve(o.tls.certFile))}, key_file: ${q(resolve(o.tls.keyFile))}, ca_file: ${q(resolve(o.tls.caFile))}, ${verify}: true, timeout: 5 }`;
  const auth = `${DEFAULTS.routeUser}:${o.routePassword}`;
  const routes = o.peers.map((p) => `nats-route://${auth}@${HOST}:${p.clusterPort}`);
  return [
    `# nats-server node ${o.node.name}, written by tre-broker cluster/nats-servers.ts`,
    `server_name: ${q(o.node.name)}`,
    `listen: "${HOST}:${o.node.clientPort}"`,
    `http: "${HOST}:${o.node.httpPort}"`,
    `tls: ${tls('verify_and_map')}`,
    // Sealed messages are about 1.8 x their body (a DR round's bid batch of ~33,000 bids from one
    // shard is ~4.3 MiB sealed, bench shards), a relayed provider message 2.4 x its MQTT payload:
    // the largest, an 8 MiB bulk registry update, is ~19 MiB sealed. NATS advises 8 MiB at most
    // (a big message holds up the connection's others) and allows 64.
    `max_payload: ${DEFAULTS.maxPayloadBytes}`,
    'authorization {',
    '  users: [',
    ...o.users.map(userBlock),
    '  ]',
    '}',
    ...(o.jetStream ? [`jetstream { store_dir: ${q(resolve(o.node.storeDir))} }`] : []),
    'cluster {',
    `  name: ${q(DEFAULTS.clusterName)}`,
    `  listen: "${HOST}:${o.node.clusterPort}"`,
    `  tls: ${tls('verify')}`,
    `  authorization { user: ${q(DEFAULTS.routeUser)}, password: ${q(o.routePassword)}, timeout: 5 }`,
    `  routes: ${list(routes)}`,
    '}',
    '',
  ].join('\n');
}

/** `count` distinct free loopback ports, all held open at once so none is handed out twice. */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((ok, fail) => {
        server.once('error', fail);
        server.listen(0, HOST, () => ok());
      });
    }
    return servers.map((s) => {
      const address = s.address();
      if (!address || typeof address === 'string') throw new Error('no port');
      return address.port;
    });
  } finally {
    await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
  }
}

const sleep = (ms: number) => new Promise((done) => setTimeout(done, ms));

/** Whether the node is serving: /healthz ok (with JetStream, its meta leader known and current). */
async function isReady(httpPort: number, jetStream: boolean): Promise<boolean> {
  try {
    const health = await fetch(`http://${HOST}:${httpPort}/healthz`, { signal: AbortSignal.timeout(2_000) });
    if (!health.ok) return false;
    if (!jetStream) return true;
    const jsz = await fetch(`http://${HOST}:${httpPort}/jsz`, { signal: AbortSignal.timeout(2_000) });
    const body = (await jsz.json()) as { meta_cluster?: { leader?: string } };
    return jsz.ok && !!body.meta_cluster?.leader;
  } catch {
    return false;
  }
}

class LocalNatsNode implements NatsNode {
  readonly clientUrl: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly tail: string[] = [];

  constructor(
    private readonly layout: NodeLayout,
    private readonly configFile: string,
    private readonly o: {
      binary: string;
      jetStream: boolean;
      readyTimeoutMs: number;
      log: (l: string) => void;
    },
  ) {
    this.clientUrl = `tls://${HOST}:${layout.clientPort}`;
  }

  get name() {
    return this.layout.name;
  }
  get clientPort() {
    return this.layout.clientPort;
  }
  get clusterPort() {
    return this.layout.clusterPort;
  }
  get alive() {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Spawns the server; rejects if it cannot be spawned. Readiness is `waitReady`'s. */
  async spawn(): Promise<void> {
    const child = spawn(this.o.binary, ['-c', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((done) => child.once('close', () => done()));
    for (const stream of [child.stdout, child.stderr])
      createInterface({ input: stream }).on('line', (line) => {
        this.tail.push(line);
        if (this.tail.length > LOG_TAIL) this.tail.shift();
        this.o.log(`[${this.name}] ${line}`);
      });
    await new Promise<void>((ok, fail) => {
      child.once('spawn', () => ok());
      child.once('error', (err: NodeJS.ErrnoException) =>
        fail(
          err.code === 'ENOENT'
            ? new NatsClusterError(
                'NATS_SERVER_MISSING',
                `${this.o.binary} not found; install it with scripts/setup.sh demo or test (Debian package nats-server)`,
              )
            : new NatsClusterError('NATS_START_FAILED', `cannot run ${this.o.binary}: ${err.message}`),
        ),
      );
    });
  }

  /** Waits until /healthz is ok; fails with the log's tail if the server exits or takes too long. */
  async waitReady(deadline: number): Promise<void> {
    while (!(await isReady(this.layout.httpPort, this.o.jetStream))) {
      if (!this.alive)
        throw new NatsClusterError(
          'NATS_START_FAILED',
          `nats-server ${this.name} exited (${this.child?.exitCode ?? this.child?.signalCode}); its log ends:\n${this.tail.join('\n')}\nfix what it says and start again (a port taken meanwhile: just start again)`,
        );
      if (Date.now() > deadline)
        throw new NatsClusterError(
          'NATS_NOT_READY',
          `nats-server ${this.name} not ready after ${this.o.readyTimeoutMs} ms (healthz, JetStream meta leader); its log ends:\n${this.tail.join('\n')}`,
        );
      await sleep(100);
    }
  }

  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!this.alive) return this.exited;
    this.child?.kill(signal);
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), DEFAULTS.exitTimeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Synchronous last resort when the parent process exits. */
  killNow(): void {
    if (this.alive) this.child?.kill('SIGKILL');
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.spawn();
    try {
      await this.waitReady(Date.now() + this.o.readyTimeoutMs);
    } catch (err) {
      await this.kill('SIGKILL');
      throw err;
    }
  }
}

/**
 * Starts a cluster and waits until every node is ready (and JetStream has a meta leader). If any
 * node fails, every node started is killed before the error is thrown.
 */
export async function startNatsCluster(opts: NatsClusterOptions): Promise<NatsCluster> {
  const given = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
  const o = { ...DEFAULTS, ...(given as NatsClusterOptions) };
  if (!Number.isInteger(o.nodes) || o.nodes < 1)
    throw new NatsClusterError('INVALID_ARGUMENT', `nodes must be a positive integer, got ${o.nodes}`);
  checkUsers(o.users);
  const ports = await freePorts(o.nodes * 3);
  const layouts: NodeLayout[] = Array.from({ length: o.nodes }, (_, i) => ({
    name: `n${i + 1}`,
    clientPort: ports[3 * i]!,
    clusterPort: ports[3 * i + 1]!,
    httpPort: ports[3 * i + 2]!,
    storeDir: join(o.dir, `n${i + 1}`, 'jetstream'),
  }));
  const routePassword = randomBytes(18).toString('base64url');
  const nodes: LocalNatsNode[] = [];
  for (const layout of layouts) {
    await mkdir(layout.storeDir, { recursive: true, mode: 0o700 });
    const configFile = join(o.dir, layout.name, 'nats-server.conf');
    const config = natsConfig({
      node: layout,
      peers: layouts.filter((p) => p !== layout),
      tls: o.tls,
      users: o.users,
      jetStream: o.jetStream,
      routePassword,
    });
    await writeFile(configFile, config, { mode: 0o600 });
    nodes.push(new LocalNatsNode(layout, configFile, o));
  }
  const killAll = () => {
    for (const n of nodes) n.killNow();
  };
  process.once('exit', killAll);
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.kill()));
    process.removeListener('exit', killAll);
  };
  try {
    for (const n of nodes) await n.spawn();
    const deadline = Date.now() + o.readyTimeoutMs;
    await Promise.all(nodes.map((n) => n.waitReady(deadline)));
  } catch (err) {
    await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
    process.removeListener('exit', killAll);
    throw err;
  }
  return { urls: nodes.map((n) => n.clientUrl), nodes, stop };
}

/**
 * The NATS servers' TLS files in `dir`: their certificate and key, issued by the regulator's CA
 * unless a valid one is there (key 0600), with the regulator root to verify clients.
 */
export async function natsServerTls(ca: CertificateAuthority, dir: string) {
  const files = { caFile: ca.paths.caCert, certFile: join(dir, 'nats.crt'), keyFile: join(dir, 'nats.key') };
  const cert = await readFile(files.certFile, 'utf8').catch(() => undefined);
  if (cert && existsSync(files.keyFile) && certifiedBy(cert, ca)) return files;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const issued = await ca.issueNatsServer();
  await writeFile(files.certFile, issued.cert);
  await writeFile(files.keyFile, issued.key, { mode: 0o600 });
  return files;
}

/** Whether a certificate (PEM) was issued by this CA and is still valid. */
export function certifiedBy(certPem: string, ca: CertificateAuthority): boolean {
  try {
    const cert = new X509Certificate(certPem);
    return (
      cert.verify(new X509Certificate(ca.certificate.toString('pem')).publicKey) &&
      Date.parse(cert.validTo) > Date.now()
    );
  } catch {
    return false;
  }
}
