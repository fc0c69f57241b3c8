/**
 * The shards' NATS cluster (issue 21) on a real 3-node nats-server: each shard is mapped from its
 * TRE certificate to its own user and may only speak as itself and read what is addressed to it;
 * clients without a certificate of the regulator's CA are refused; an R3 JetStream stream and a
 * connected client survive kill -9 of one node.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import {
  connect,
  type Msg,
  type NatsConnection,
  type NodeConnectionOptions,
  PermissionViolationError,
  RequestError,
  TimeoutError,
} from '@nats-io/transport-node';
import { shardSubjects } from '@tre/protocol';
import { CertificateAuthority, provisionTre } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminUser,
  type NatsCluster,
  NatsClusterError,
  natsServerTls,
  shardUser,
  startNatsCluster,
} from '../src/cluster/nats-servers.js';

interface Pem {
  ca: string;
  cert: string;
  key: string;
}

const SHARDS = ['s1', 's2', 's3'] as const;
type Shard = (typeof SHARDS)[number];

let dir: string;
let cluster: NatsCluster;
let caPem: string;
const shardPem = {} as Record<Shard, Pem>;
let adminPem: Pem;
let meterPem: Pem;
let natsServerPem: Pem;
let foreignPem: Pem;
const connections: NatsConnection[] = [];

const read = async (files: { ca: string; cert: string; key: string }): Promise<Pem> => ({
  ca: await readFile(files.ca, 'utf8'),
  cert: await readFile(files.cert, 'utf8'),
  key: await readFile(files.key, 'utf8'),
});

async function provisionShard(ca: CertificateAuthority, base: string, shard: string): Promise<Pem> {
  const pkiDir = join(base, shard, 'pki');
  await provisionTre(ca, {
    dataDir: join(base, shard, 'data'),
    pkiDir,
    treId: shard,
    hosts: [],
    config: { shard },
    bootPcrs: [],
  });
  return read({ ca: join(pkiDir, 'ca.crt'), cert: join(pkiDir, 'tre.crt'), key: join(pkiDir, 'tre.key') });
}

/** A client with this certificate, trusting the regulator's CA, reconnecting fast. */
async function connectWith(pem: Pem, extra: Partial<NodeConnectionOptions> = {}): Promise<NatsConnection> {
  const nc = await connect({
    servers: cluster.urls,
    tls: { ca: caPem, cert: pem.cert, key: pem.key },
    reconnectTimeWait: 200,
    maxReconnectAttempts: -1,
    ...extra,
  });
  connections.push(nc);
  return nc;
}

const connectShard = (shard: Shard, extra: Partial<NodeConnectionOptions> = {}) =>
  connectWith(shardPem[shard], { inboxPrefix: shardSubjects.inboxPrefix(shard), ...extra });

/** The connection's permission violations as the server reports them. */
function violations(nc: NatsConnection): PermissionViolationError[] {
  const seen: PermissionViolationError[] = [];
  void (async () => {
    for await (const s of nc.status())
      if (s.type === 'error' && s.error instanceof PermissionViolationError) seen.push(s.error);
  })();
  return seen;
}

/** Resolves once `check` holds, polling; fails after `attempts`. */
async function eventually(check: () => boolean | Promise<boolean>, what: string, attempts = 100) {
  for (let i = 0; i < attempts; i++) {
    if (await check()) return;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The messages a new subscription receives, in order. */
function collect(nc: NatsConnection, subject: string): Msg[] {
  const got: Msg[] = [];
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      got.push(msg);
    },
  });
  return got;
}

/**
 * Publishes until `got` holds a message: a new subscription's interest reaches the other nodes
 * over the routes asynchronously, so the first publishes may find no subscriber on the sender's node.
 */
async function publishUntilReceived(nc: NatsConnection, subject: string, payload: string, got: Msg[]) {
  await eventually(() => {
    if (got.length > 0) return true;
    nc.publish(subject, payload);
    return false;
  }, `a message on ${subject}`);
}

/** Every message the admin saw crossing the cluster (subject `>`). */
const crossed: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nats-cluster-'));
  const { ca } = await CertificateAuthority.init(join(dir, 'regulator'));
  caPem = await readFile(ca.paths.caCert, 'utf8');
  for (const shard of SHARDS) shardPem[shard] = await provisionShard(ca, join(dir, 'shards'), shard);
  adminPem = await read(await ca.issue('regulator', 'ops'));
  meterPem = await read(await ca.issue('meter', 'm1'));
  const natsTls = await natsServerTls(ca, dir);
  natsServerPem = await read({ ca: natsTls.caFile, cert: natsTls.certFile, key: natsTls.keyFile });
  // Another regulator's CA, issuing a certificate for the same shard name.
  const { ca: other } = await CertificateAuthority.init(join(dir, 'other-regulator'));
  foreignPem = await provisionShard(other, join(dir, 'other-shards'), 's1');

  cluster = await startNatsCluster({
    dir: join(dir, 'nats'),
    tls: natsTls,
    users: [...SHARDS.map(shardUser), adminUser('ops')],
    log: process.env.TRE_TEST_LOG_LEVEL ? (line) => console.error(line) : undefined,
  });
  const admin = await connectWith(adminPem);
  admin.subscribe('>', {
    callback: (_err, msg) => {
      crossed.push(msg.subject);
    },
  });
  await admin.flush();
});

afterAll(async () => {
  await Promise.all(connections.map((nc) => nc.close().catch(() => {})));
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('NATS cluster between shards', () => {
  it('maps each shard by its TRE certificate: s1 sends to s2, s2 receives it, the admin sees it cross', async () => {
    const [s1, s2] = await Promise.all([connectShard('s1'), connectShard('s2')]);
    const inbox = collect(s2, shardSubjects.messagesTo('s2'));
    await publishUntilReceived(s1, shardSubjects.message('s2', 's1'), 'sealed for s2', inbox);
    expect(inbox[0]?.subject).toBe('tre.shard.s2.from.s1');
    expect(inbox[0]?.string()).toBe('sealed for s2');
    await eventually(() => crossed.includes('tre.shard.s2.from.s1'), 'the admin to see s1 -> s2');
  });

  it('s1 cannot speak as s2 nor read what is addressed to s2: violations reported, nothing delivered', async () => {
    const [s1, s3] = await Promise.all([connectShard('s1'), connectShard('s3')]);
    const s1Violations = violations(s1);
    const s3Inbox = collect(s3, shardSubjects.messagesTo('s3'));
    await publishUntilReceived(s1, shardSubjects.message('s3', 's1'), 'probe', s3Inbox);
    const eavesdrop = s1.subscribe(shardSubjects.messagesTo('s2'));

    s1.publish(shardSubjects.message('s3', 's2'), 'forged as s2');
    s1.publish(shardSubjects.message('s3', 's1'), 'marker from s1');
    s3.publish(shardSubjects.message('s2', 's3'), 'for s2 only');

    // Messages from one connection arrive in order: once the marker is in, the forgery never will be.
    await eventually(() => s3Inbox.some((m) => m.string() === 'marker from s1'), 'the marker at s3');
    expect(s3Inbox.map((m) => m.subject)).toEqual(s3Inbox.map(() => 'tre.shard.s3.from.s1'));
    expect(s3Inbox.map((m) => m.string())).not.toContain('forged as s2');
    const closedWith = await eavesdrop.closed;
    expect(closedWith).toBeInstanceOf(PermissionViolationError);
    expect(closedWith).toMatchObject({ operation: 'subscription', subject: shardSubjects.messagesTo('s2') });
    await eventually(
      () => s1Violations.some((v) => v.operation === 'publish' && v.subject === 'tre.shard.s3.from.s2'),
      'the publish violation',
    );
    await eventually(() => crossed.includes('tre.shard.s3.from.s1'), 'the admin to see the marker');
    expect(crossed).not.toContain('tre.shard.s3.from.s2');
    expect(eavesdrop.getReceived()).toBe(0);
    expect(s1.isClosed()).toBe(false);
  });

  it('request/reply on hello(s2) from s1: the reply comes back on s1 inbox prefix', async () => {
    const [s1, s2] = await Promise.all([connectShard('s1'), connectShard('s2')]);
    const replySubjects: string[] = [];
    s2.subscribe(shardSubjects.hello('s2'), {
      callback: (_err, msg) => {
        replySubjects.push(msg.reply ?? '');
        msg.respond(`hello ${msg.string()}, from s2`);
      },
    });
    let reply: Msg | undefined;
    await eventually(
      async () => {
        reply = await s1
          .request(shardSubjects.hello('s2'), 's1', { timeout: 1_000 })
          .catch((err: unknown) => {
            // s2's interest may not have reached s1's node yet: no responders there, or only the
            // admin's `>` (which never answers, so the request times out). Try again.
            if ((err instanceof RequestError && err.isNoResponders()) || err instanceof TimeoutError)
              return undefined;
            throw err;
          });
        return !!reply;
      },
      'a reply from s2',
      20,
    );
    expect(reply?.string()).toBe('hello s1, from s2');
    expect(replySubjects[0]?.startsWith(`${shardSubjects.inboxPrefix('s1')}.`)).toBe(true);
  });

  it('refuses a client without a certificate, with another CA, or whose certificate maps to no user', async () => {
    const one = { servers: cluster.urls[0]!, maxReconnectAttempts: 0, reconnect: false, timeout: 5_000 };
    await expect(connect({ ...one, tls: { ca: caPem } })).rejects.toThrow();
    await expect(
      connect({ ...one, tls: { ca: caPem, cert: foreignPem.cert, key: foreignPem.key } }),
    ).rejects.toThrow();
    // Issued by our CA but no NATS user: a meter, and the servers' own certificate.
    for (const pem of [meterPem, natsServerPem])
      await expect(connect({ ...one, tls: { ca: caPem, cert: pem.cert, key: pem.key } })).rejects.toThrow(
        /Authorization Violation/i,
      );
  });

  it('an R3 JetStream stream keeps serving and a client fails over after kill -9 of one node', async () => {
    const admin = await connectWith(adminPem);
    const jsm = await jetstreamManager(admin);
    const info = await jsm.streams.add({ name: 'SHARD_AUDIT', subjects: ['audit.>'], num_replicas: 3 });
    expect(info.config.num_replicas).toBe(3);
    const js = jetstream(admin);
    expect((await js.publish('audit.before', 'one')).seq).toBe(1);

    const s1 = await connectShard('s1');
    const victim = cluster.nodes.find((n) => n.name === s1.info?.server_name);
    expect(victim).toBeDefined();
    // s2 on the nodes that stay up (a flush in flight while it reconnects would be rejected).
    const s2 = await connectShard('s2', {
      servers: cluster.nodes.filter((n) => n !== victim).map((n) => n.clientUrl),
    });
    const s1Reconnected = new Promise<string>((done) => {
      void (async () => {
        for await (const s of s1.status()) if (s.type === 'reconnect') return done(s.server);
      })();
    });
    await victim!.kill('SIGKILL');
    expect(victim!.alive).toBe(false);

    // The two left elect a stream leader if it was the victim's; publishing is acknowledged again.
    let ack: Awaited<ReturnType<typeof js.publish>> | undefined;
    await eventually(
      async () => {
        ack = await js.publish('audit.after', 'two', { timeout: 2_000 }).catch(() => undefined);
        return !!ack;
      },
      'an acknowledged publish on two nodes',
      20,
    );
    expect(ack).toMatchObject({ stream: 'SHARD_AUDIT', seq: 2 });

    // s1 was on the victim: it reconnects to another node and still reaches s2.
    expect(await s1Reconnected).not.toBe(`127.0.0.1:${victim!.clientPort}`);
    expect(s1.info?.server_name).not.toBe(victim!.name);
    const inbox = collect(s2, shardSubjects.messagesTo('s2'));
    await publishUntilReceived(s1, shardSubjects.message('s2', 's1'), 'after failover', inbox);
    expect(inbox[0]?.string()).toBe('after failover');

    // Restarted on the same ports and store, the node serves again.
    await victim!.restart();
    expect(victim!.alive).toBe(true);
    const direct = await connectWith(adminPem, { servers: victim!.clientUrl });
    expect(direct.info?.server_name).toBe(victim!.name);
    const ack3 = await jetstream(direct).publish('audit.restarted', 'three', { timeout: 10_000 });
    expect(ack3.seq).toBe(3);
  }, 90_000);

  it('says what to do when nats-server is missing, and starts nothing', async () => {
    const start = startNatsCluster({
      dir: join(dir, 'missing'),
      binary: join(dir, 'no-such-nats-server'),
      tls: { caFile: 'ca.crt', certFile: 'nats.crt', keyFile: 'nats.key' },
      users: [shardUser('s1')],
    });
    await expect(start).rejects.toThrow(NatsClusterError);
    await expect(start).rejects.toThrow(/scripts\/setup\.sh demo or test \(Debian package nats-server\)/);
  });

  it('refuses a user not named by a certificate SAN URI (a DNS name could map any TRE to it)', async () => {
    await expect(
      startNatsCluster({
        dir: join(dir, 'bad-user'),
        tls: { caFile: 'ca.crt', certFile: 'nats.crt', keyFile: 'nats.key' },
        users: [{ user: 'localhost', permissions: 'admin' }],
      }),
    ).rejects.toThrow(/not a urn:tre:<role>:<id> identity/);
  });
});
