/**
 * A shard's journal and lease (issue 21) on a real 3-node nats-server cluster (mTLS, per-shard
 * users): entries read back in order and open only with the shard's key; a writer behind the head
 * is fenced; a resent entry is stored once; s1 cannot touch s2's journal or lease, nor make or
 * remove streams; appends and a follower carry on through kill -9 of a node and its restart; a
 * standby takes the lease once the primary stops renewing, and the old primary's renewal fails;
 * a holder whose renewals go unanswered (its traffic held by a proxy) lapses and regains the
 * lease, or learns a standby took it;
 * a journaled store fails over: the standby replays to the same rows, takes the lease and the
 * journal, and the old primary's next commit is refused.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { shardSubjects } from '@tre/protocol';
import { CertificateAuthority, createLogger, provisionTre } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  adminUser,
  type NatsCluster,
  natsServerTls,
  shardUser,
  startNatsCluster,
} from '../src/cluster/nats-servers.js';
import {
  ensureShardStreams,
  type JournalEntry,
  journalKey,
  openPart,
  PartAssembler,
  ShardJournal,
  ShardJournalError,
  splitParts,
} from '../src/cluster/shard-journal.js';
import { type LeaseLoss, ShardLease } from '../src/cluster/shard-lease.js';
import {
  applyChanges,
  type ChangeBatch,
  JournaledCommits,
  journalState,
  lastChange,
  migrateChangeJournal,
  resumeWriting,
} from '../src/store/change-journal.js';
import { Store } from '../src/store/store.js';
import { type PausableProxy, pausableProxy } from './support/pausable-proxy.js';

interface Pem {
  cert: string;
  key: string;
}

/** s3's journal is only written by the failover test (its statements replay into a real store). */
const SHARDS = ['s1', 's2', 's3'] as const;
type Shard = (typeof SHARDS)[number];
/** The lease buckets' TTL in these tests: a standby takes over within it (plus polling) after the last renewal. */
const LEASE_TTL_MS = 3_000;

let dir: string;
let cluster: NatsCluster;
let caPem: string;
const shardPem = {} as Record<Shard, Pem>;
let adminPem: Pem;
const connections: NatsConnection[] = [];
const log = createLogger({ level: process.env.TRE_JOURNAL_LOG ?? 'silent' });
const shardKey = { s1: randomBytes(32), s2: randomBytes(32), s3: randomBytes(32) };

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
  return {
    cert: await readFile(join(pkiDir, 'tre.crt'), 'utf8'),
    key: await readFile(join(pkiDir, 'tre.key'), 'utf8'),
  };
}

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

const journalOf = (nats: NatsConnection, shard: Shard, key = shardKey[shard]) =>
  new ShardJournal({ nats, shard, shardKey: key, log, options: { appendDeadlineMs: 30_000 } });

async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, what: string, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 100));
  }
}

let upTo = 0;
/** A batch of `n` statements of about `size` bytes each, numbered on from the last. */
function batch(writer: string, n: number, size = 40): ChangeBatch {
  const first = upTo + 1;
  upTo += n;
  return {
    writer,
    upTo,
    sqls: Array.from(
      { length: n },
      (_, i) => `INSERT OR REPLACE INTO "t" ("rowid", "v") VALUES (${first + i}, '${'x'.repeat(size)}')`,
    ),
  };
}

/** Replays the whole journal of `shard` (from a fresh connection of that shard). */
async function readBack(journal: ShardJournal): Promise<JournalEntry[]> {
  const got: JournalEntry[] = [];
  await journal.replay(1, (e) => {
    got.push(e);
  });
  return got;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shard-journal-'));
  const { ca } = await CertificateAuthority.init(join(dir, 'regulator'));
  caPem = await readFile(ca.paths.caCert, 'utf8');
  for (const shard of SHARDS) shardPem[shard] = await provisionShard(ca, join(dir, 'shards'), shard);
  const admin = await ca.issue('regulator', 'ops');
  adminPem = { cert: await readFile(admin.cert, 'utf8'), key: await readFile(admin.key, 'utf8') };
  cluster = await startNatsCluster({
    dir: join(dir, 'nats'),
    tls: await natsServerTls(ca, dir),
    users: [...SHARDS.map(shardUser), adminUser('ops')],
    log: process.env.TRE_TEST_LOG_LEVEL ? (line) => console.error(line) : undefined,
  });
  const jsm = await jetstreamManager(await connectWith(adminPem));
  await ensureShardStreams(jsm, SHARDS, { leaseTtlMs: LEASE_TTL_MS });
  await ensureShardStreams(jsm, SHARDS, { leaseTtlMs: LEASE_TTL_MS }); // idempotent
}, 120_000);

afterAll(async () => {
  await Promise.all(connections.map((nc) => nc.close().catch(() => {})));
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('entries (pure)', () => {
  it('splits large batches into parts and assembles them; an interrupted group is dropped', () => {
    const b: ChangeBatch = { writer: 'w', upTo: 9, sqls: ['aaaa', 'bbbb', 'cccc', 'dddddddddd'] };
    const parts = splitParts(b, 8);
    expect(parts.map((p) => [p.k, p.n, p.c])).toEqual([
      [0, 3, ['aaaa', 'bbbb']],
      [1, 3, ['cccc']],
      [2, 3, ['dddddddddd']],
    ]);
    const a = new PartAssembler();
    expect(a.push(1, parts[0]!)).toBeUndefined();
    expect(a.push(2, parts[1]!)).toBeUndefined();
    expect(a.push(3, parts[2]!)).toEqual({ seq: 3, writer: 'w', upTo: 9, sqls: b.sqls });
    // A writer stops after part 0; the next writer's entry is taken, the lone part dropped.
    expect(a.push(4, parts[0]!)).toBeUndefined();
    expect(a.push(5, { w: 'v', u: 10, k: 0, n: 1, c: ['x'] })).toEqual({
      seq: 5,
      writer: 'v',
      upTo: 10,
      sqls: ['x'],
    });
    expect(a.push(6, parts[1]!)).toBeUndefined(); // an orphan part
    expect(a.dropped).toBe(2);
  });
});

describe('shard journal on a 3-node cluster', () => {
  it('appends read back in order and open only with the shard key; NATS holds ciphertext', async () => {
    const writer = journalOf(await connectShard('s1'), 's1');
    writer.startWriting({ seq: await writer.lastSeq() });
    const sent = [batch('w1', 1), batch('w1', 3), batch('w1', 2_000, 600), batch('w1', 2)]; // the third in parts
    const positions = [];
    for (const b of sent) positions.push(await writer.append(b));
    expect(positions.map((p) => p.upTo)).toEqual(sent.map((b) => b.upTo));
    const last = positions.at(-1)!.seq;
    expect(last).toBeGreaterThan(sent.length); // the large batch took several entries

    const reader = journalOf(await connectShard('s1'), 's1');
    const got = await readBack(reader);
    expect(got.map(({ writer, upTo, sqls }) => ({ writer, upTo, sqls }))).toEqual(sent);
    expect(got.at(-1)!.seq).toBe(last);

    // What NATS stores opens only with s1's key, and only at its own sequence.
    const raw = await (await jetstreamManager(await connectWith(adminPem))).streams.getMessage(
      writer.stream,
      {
        seq: 1,
      },
    );
    expect(Buffer.from(raw!.data).toString('latin1')).not.toContain('INSERT');
    expect(openPart(journalKey(shardKey.s1, 's1'), writer.stream, 1, raw!.data).c).toEqual(sent[0]!.sqls);
    expect(() => openPart(journalKey(shardKey.s1, 's1'), writer.stream, 2, raw!.data)).toThrow(
      /JOURNAL_CORRUPT|does not open/,
    );
    const wrongKey = journalOf(await connectShard('s1'), 's1', randomBytes(32));
    await expect(readBack(wrongKey)).rejects.toMatchObject({ code: 'JOURNAL_CORRUPT' });
  }, 60_000);

  it('a writer behind the head is fenced and stays fenced; the writer at the head goes on', async () => {
    const primary = journalOf(await connectShard('s1'), 's1');
    const head = await primary.lastSeq();
    primary.startWriting({ seq: head });
    await primary.append(batch('primary', 2));
    const stale = journalOf(await connectShard('s1'), 's1');
    stale.startWriting({ seq: head }); // it has not seen the primary's entry
    const fenced = await stale.append(batch('stale', 1)).catch((err: unknown) => err);
    expect(fenced).toBeInstanceOf(ShardJournalError);
    expect(fenced).toMatchObject({ code: 'JOURNAL_FENCED', message: /stop acknowledging and exit/ });
    await expect(stale.append(batch('stale', 1))).rejects.toMatchObject({ code: 'JOURNAL_FENCED' });
    expect((await primary.append(batch('primary', 1))).seq).toBe(head + 2);

    // A standby that replayed to the head takes over: now the old primary is the one fenced.
    const standby = journalOf(await connectShard('s1'), 's1');
    standby.startWriting({ seq: await standby.replay(1, () => {}) });
    await standby.append(batch('standby', 1));
    await expect(primary.append(batch('primary', 1))).rejects.toMatchObject({ code: 'JOURNAL_FENCED' });
    expect(await primary.lastSeq()).toBe(head + 3);
  }, 60_000);

  it('an entry resent with the same Msg-Id is stored once', async () => {
    const nats = await connectShard('s1');
    const writer = journalOf(nats, 's1');
    const head = await writer.lastSeq();
    writer.startWriting({ seq: head });
    const b = batch('resender', 3);
    expect(await writer.append(b)).toEqual({ seq: head + 1, upTo: b.upTo });
    // As after a publish whose ack was lost: the same entry again, expecting the old head.
    writer.startWriting({ seq: head });
    expect(await writer.append(b)).toEqual({ seq: head + 1, upTo: b.upTo });
    expect(await writer.lastSeq()).toBe(head + 1);
    // The stream itself: a second publish with a Msg-Id already stored is a duplicate.
    const js = jetstream(nats, { checkAPI: false });
    const first = await js.publish(shardSubjects.journal('s1'), 'probe', { msgID: 'same-id' });
    const again = await js.publish(shardSubjects.journal('s1'), 'probe', { msgID: 'same-id' });
    expect(again).toMatchObject({ duplicate: true, seq: first.seq });
    expect(await writer.lastSeq()).toBe(first.seq);
  }, 60_000);

  it("s1 cannot read or write s2's journal or lease, nor make or remove streams", async () => {
    const s1 = await connectShard('s1');
    const intruder = journalOf(s1, 's2', shardKey.s2); // even with s2's key
    intruder.startWriting({ seq: 0 });
    await expect(intruder.append(batch('intruder', 1))).rejects.toMatchObject({
      code: 'JOURNAL_UNAVAILABLE',
      message: /Permissions Violation for Publish to "tre\.journal\.s2"/,
    });
    await expect(intruder.lastSeq()).rejects.toThrow(/Permissions Violation.*STREAM\.INFO\.TRE_JOURNAL_s2/);
    const follower = intruder.follow(1, () => {});
    await expect(follower.done).rejects.toThrow(/Permissions Violation/);
    const lease = new ShardLease({
      nats: s1,
      shard: 's2',
      options: { ttlMs: LEASE_TTL_MS },
      onLost: () => {},
      log,
    });
    await expect(lease.acquire()).rejects.toMatchObject({
      code: 'LEASE_UNAVAILABLE',
      message: /Permissions Violation for Publish to "\$KV\.tre-lease-s2\.holder"/,
    });
    const kv = jetstream(s1, { checkAPI: false });
    await expect(
      kv.publish(`$KV.${shardSubjects.leaseBucket('s2')}.holder`, 'forged', { timeout: 2_000 }),
    ).rejects.toThrow(/Permissions Violation/);
    const jsm = await jetstreamManager(s1, { checkAPI: false });
    await expect(jsm.streams.add({ name: 'S1_OWN', subjects: ['s1own.>'] })).rejects.toThrow(
      /Permissions Violation/,
    );
    await expect(jsm.streams.delete(shardSubjects.journalStream('s1'))).rejects.toThrow(
      /Permissions Violation/,
    );
    await expect(jsm.streams.purge(shardSubjects.journalStream('s1'))).rejects.toThrow(
      /Permissions Violation/,
    );
    await expect(jsm.streams.getMessage(shardSubjects.journalStream('s2'), { seq: 1 })).rejects.toThrow(
      /Permissions Violation/,
    );
    expect(() => s1.subscribe(shardSubjects.journal('s2'))).not.toThrow(); // refused by the server:
    const sub = s1.subscribe(shardSubjects.journal('s2'));
    await expect(sub.closed).resolves.toMatchObject({ message: /Permissions Violation for Subscription/ });
  }, 60_000);

  it("appends and a follower carry on through kill -9 of the follower's consumer's node and its restart", async () => {
    const admin = await jetstreamManager(await connectWith(adminPem));
    const stream = shardSubjects.journalStream('s2');
    const follower = journalOf(await connectShard('s2'), 's2');
    const followed: JournalEntry[] = [];
    const following = follower.follow(1, (e) => {
      followed.push(e);
    });
    // The node that holds the follower's consumer (an R1 ordered consumer): it dies with it.
    const consumerNode = await eventually(async () => {
      for await (const ci of admin.consumers.list(stream)) if (ci.cluster?.leader) return ci.cluster.leader;
      return undefined;
    }, "the follower's consumer");
    const victim = cluster.nodes.find((n) => n.name === consumerNode)!;
    const streamLeader = (await admin.streams.info(stream)).cluster?.leader;
    const writer = journalOf(
      await connectShard('s2', {
        servers: cluster.nodes.filter((n) => n !== victim).map((n) => n.clientUrl),
      }),
      's2',
    );
    writer.startWriting({ seq: await writer.lastSeq() });
    const sent: ChangeBatch[] = [];
    const appendSome = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const b = batch('survivor', 1 + (i % 3));
        await writer.append(b);
        sent.push(b);
      }
    };
    await appendSome(5);
    await following.reached(await writer.lastSeq());

    await victim.kill('SIGKILL');
    await appendSome(10); // retried through a leader election when the victim led the stream
    await eventually(
      () => followed.length === sent.length || undefined,
      'the follower after the kill',
      60_000,
    );

    await victim.restart();
    await appendSome(5);
    await eventually(
      () => followed.length === sent.length || undefined,
      'the follower after the restart',
      60_000,
    );
    expect(followed.map(({ upTo, sqls }) => ({ upTo, sqls }))).toEqual(
      sent.map(({ upTo, sqls }) => ({ upTo, sqls })),
    );
    expect(following.position).toBe(await writer.lastSeq());
    // The restarted node serves the stream too: a new reader connected only to it reads everything.
    const direct = journalOf(await connectShard('s2', { servers: [victim.clientUrl] }), 's2');
    await eventually(
      async () => (await readBack(direct)).length === sent.length || undefined,
      'a reader on the restarted node',
    );
    await following.stop();
    await expect(following.done).resolves.toBeUndefined();
    if (process.env.TRE_JOURNAL_LOG) console.error({ consumerNode, streamLeader });
  }, 180_000);
});

describe('shard lease on a 3-node cluster', () => {
  it(`a standby takes over within the TTL (${LEASE_TTL_MS} ms) once the primary stops renewing; the old renewal fails`, async () => {
    const lost: { who: string; why: LeaseLoss; at: number }[] = [];
    const leaseFor = async (who: string) =>
      new ShardLease({
        nats: await connectShard('s1'),
        shard: 's1',
        options: { ttlMs: LEASE_TTL_MS, instanceId: who },
        onLost: (why) => lost.push({ who, why, at: Date.now() }),
        log,
      });
    const primary = await leaseFor('primary-1');
    const standby = await leaseFor('standby-1');
    await primary.acquire();
    expect(primary.holding).toBe(true);
    await expect(standby.acquire()).rejects.toMatchObject({
      code: 'LEASE_HELD',
      message: /held by primary-1/,
    });

    let acquiredAt = 0;
    const waiting = standby.waitToAcquire().then(() => {
      acquiredAt = Date.now();
    });
    // Renewals keep it: after twice the TTL the standby still waits.
    await new Promise((done) => setTimeout(done, 2 * LEASE_TTL_MS));
    expect(acquiredAt).toBe(0);
    expect(primary.holding).toBe(true);

    primary.stop(); // a crash: no more renewals, nothing released
    const stoppedAt = Date.now();
    await waiting;
    expect(standby.holding).toBe(true);
    // Bounded: the TTL from the last renewal (at most a renewal period before the stop), plus polling and slack.
    expect(acquiredAt - stoppedAt).toBeLessThan(LEASE_TTL_MS + 3_000);
    expect(acquiredAt - stoppedAt).toBeGreaterThan(0);

    await expect(primary.renew()).rejects.toMatchObject({ code: 'LEASE_LOST' });

    // A clean release lets the next one in at once.
    await standby.release();
    const next = await leaseFor('next-1');
    await next.acquire();
    await next.release();
    expect(lost).toEqual([]);
  }, 60_000);

  it('a holder renewing after its value expired is refused by the compare-and-swap, and told', async () => {
    const lost: LeaseLoss[] = [];
    // It believes the lease lasts a minute (the bucket's TTL is 3 s): its renewal comes too late.
    const late = new ShardLease({
      nats: await connectShard('s1'),
      shard: 's1',
      options: { ttlMs: 60_000, renewEveryMs: 50_000, marginMs: 5_000, instanceId: 'late-1' },
      onLost: (why) => lost.push(why),
      log,
    });
    const standby = new ShardLease({
      nats: await connectShard('s1'),
      shard: 's1',
      options: { ttlMs: LEASE_TTL_MS, instanceId: 'standby-3' },
      onLost: () => {},
      log,
    });
    await late.acquire();
    await standby.waitToAcquire();
    expect(late.holding).toBe(true); // what it believes
    await expect(late.renew()).rejects.toMatchObject({ code: 'LEASE_LOST', message: /taken by another TRE/ });
    expect(lost).toEqual(['taken']);
    expect(late.holding).toBe(false);
    await standby.release();
  }, 60_000);

  it('a holder cut off from NATS gives the lease up before a standby can take it', async () => {
    const lost: { why: LeaseLoss; at: number }[] = [];
    const primaryNats = await connectShard('s1');
    const primary = new ShardLease({
      nats: primaryNats,
      shard: 's1',
      options: { ttlMs: LEASE_TTL_MS, instanceId: 'primary-2' },
      onLost: (why) => lost.push({ why, at: Date.now() }),
      log,
    });
    const standby = new ShardLease({
      nats: await connectShard('s1'),
      shard: 's1',
      options: { ttlMs: LEASE_TTL_MS, instanceId: 'standby-2' },
      onLost: () => {},
      log,
    });
    await primary.acquire();
    await primaryNats.close(); // renewals now fail
    await standby.waitToAcquire();
    const acquiredAt = Date.now();
    await eventually(() => lost.length > 0 || undefined, 'the primary to give up');
    expect(lost).toEqual([{ why: 'expired', at: expect.any(Number) }]);
    expect(lost[0]!.at).toBeLessThanOrEqual(acquiredAt);
    expect(primary.holding).toBe(false);
    await standby.release();
  }, 60_000);
});

describe('a lapsed lease (renewals unanswered, as while JetStream elects a leader)', () => {
  /**
   * A holder on s1 whose connection goes through a proxy that holds its traffic: renewals every
   * 300 ms, valid 1 s from the last one sent (the bucket's TTL is 3 s), so a pause of 1.8 s lapses
   * it with its value still stored, and one of 4.5 s lets the server expire the value.
   */
  async function heldHolder(who: string, mayRegain?: () => Promise<boolean>) {
    const proxy = await pausableProxy(cluster.urls[0]!);
    const events: string[] = [];
    const lease = new ShardLease({
      nats: await connectShard('s1', { servers: [proxy.url], ignoreClusterUpdates: true }),
      shard: 's1',
      options: { ttlMs: LEASE_TTL_MS, renewEveryMs: 300, marginMs: 2_000, instanceId: who },
      onLost: (why) => events.push(`lost ${why}`),
      onLapsed: (lapsed) => events.push(lapsed ? 'lapsed' : 'regained'),
      ...(mayRegain ? { mayRegain } : {}),
      log,
    });
    await lease.acquire();
    return { lease, proxy, events };
  }
  const pauseFor = async (proxy: PausableProxy, ms: number) => {
    proxy.pause();
    await new Promise((done) => setTimeout(done, ms));
    proxy.resume();
  };

  it('regains the lease when answers come back before the value expired', async () => {
    const { lease, proxy, events } = await heldHolder('lapsing-1');
    await pauseFor(proxy, 1_800);
    expect(lease.holding).toBe(false); // stepped back while unanswered
    expect(lease.lapsed).toBe(true);
    await eventually(() => lease.holding || undefined, 'the lease regained');
    expect(events).toEqual(['lapsed', 'regained']);
    const other = new ShardLease({
      nats: await connectShard('s1'),
      shard: 's1',
      options: { ttlMs: LEASE_TTL_MS },
      onLost: () => {},
      log,
    });
    await expect(other.acquire()).rejects.toMatchObject({ code: 'LEASE_HELD', message: /lapsing-1/ });
    await lease.release();
    await proxy.close();
  }, 30_000);

  it('creates it again once the server expired it, if its journal says it may; else it is lost', async () => {
    let asked = 0;
    const may = await heldHolder('lapsing-2', async () => {
      asked++;
      return true;
    });
    await pauseFor(may.proxy, 4_500);
    await eventually(() => may.lease.holding || undefined, 'the lease created again');
    expect(may.events).toEqual(['lapsed', 'regained']);
    expect(asked).toBe(1);
    await may.lease.release();
    await may.proxy.close();

    const mayNot = await heldHolder('lapsing-3', async () => false); // another wrote its journal since
    await pauseFor(mayNot.proxy, 4_500);
    await eventually(() => mayNot.events.at(-1)?.startsWith('lost') || undefined, 'the lease lost');
    expect(mayNot.events).toEqual(['lapsed', 'lost taken']);
    expect(mayNot.lease.holding).toBe(false);
    await mayNot.proxy.close();
  }, 40_000);

  it('a standby that took it while the holder was lapsed keeps it; the holder learns it lost it', async () => {
    const { lease, proxy, events } = await heldHolder('lapsing-4');
    expect(lease.holding).toBe(true);
    const standby = new ShardLease({
      nats: await connectShard('s1'),
      shard: 's1',
      options: { ttlMs: LEASE_TTL_MS, instanceId: 'standby-4' },
      onLost: () => {},
      log,
    });
    proxy.pause();
    await standby.waitToAcquire();
    proxy.resume();
    await eventually(() => events.at(-1)?.startsWith('lost') || undefined, 'the holder told');
    expect(events).toEqual(['lapsed', 'lost taken']);
    expect(lease.holding).toBe(false);
    expect(standby.holding).toBe(true);
    await standby.release();
    await proxy.close();
  }, 40_000);
});

describe('a journaled store fails over to a standby (s3)', () => {
  const SCHEMA = `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE events (id INTEGER PRIMARY KEY, note TEXT NOT NULL);`;
  const openStore = () => {
    const store = new Store(':memory:');
    store.migrate('failover-1', SCHEMA);
    migrateChangeJournal(store);
    return store;
  };
  const rows = (store: Store) => ({
    kv: store.db.prepare('SELECT * FROM kv ORDER BY k').all(),
    events: store.db.prepare('SELECT * FROM events ORDER BY id').all(),
  });
  const replayInto = (store: Store) => (e: JournalEntry) =>
    applyChanges(store.db, e.sqls, { seq: e.seq, upTo: e.upTo });

  it('standby replays to identical rows, takes lease and journal; the old primary is refused', async () => {
    const lease = (who: string) =>
      connectShard('s3').then(
        (nats) =>
          new ShardLease({
            nats,
            shard: 's3',
            options: { ttlMs: LEASE_TTL_MS, instanceId: who },
            onLost: () => {},
            log,
          }),
      );
    // The primary: lease, journal at its head, every commit journaled before it settles.
    const primary = openStore();
    const primaryLease = await lease('primary');
    await primaryLease.acquire();
    const primaryJournal = journalOf(await connectShard('s3'), 's3');
    primaryJournal.startWriting({ seq: await primaryJournal.lastSeq() });
    JournaledCommits.attach(primary, primaryJournal);
    // The standby: follows the journal into its own store, waits for the lease.
    const standby = openStore();
    const standbyJournal = journalOf(await connectShard('s3'), 's3');
    const following = standbyJournal.follow(1, replayInto(standby));
    const standbyLease = await lease('standby');
    const leased = standbyLease.waitToAcquire();

    const put = (store: Store, k: string, v: number) =>
      store.commit((db) =>
        db.prepare('INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT DO UPDATE SET v = excluded.v').run(k, v),
      );
    const note = (store: Store, text: string) =>
      store.commit((db) => db.prepare('INSERT INTO events (note) VALUES (?)').run(text));
    await Promise.all(Array.from({ length: 50 }, (_, i) => put(primary, `k${i % 20}`, i)));
    await Promise.all([note(primary, 'one'), note(primary, 'two'), put(primary, 'k1', -1)]);
    await primary.commit((db) => db.prepare("DELETE FROM kv WHERE k IN ('k2', 'k3')").run());
    const acknowledged = rows(primary);

    // The primary dies (no renewals, no release); the standby gets the lease within the TTL.
    primaryLease.stop();
    await leased;
    await following.reached(await standbyJournal.lastSeq());
    await following.stop();
    expect(rows(standby)).toEqual(acknowledged);

    // It takes the journal over where its store is, and serves.
    const { writer, position } = journalState(standby);
    const after: JournalEntry[] = [];
    await standbyJournal.replay(position.seq + 1, (e) => {
      after.push(e);
    });
    const decision = resumeWriting({ writer, position, lastChange: lastChange(standby) }, after);
    expect(decision).toEqual({ kind: 'write', position });
    standbyJournal.startWriting(position);
    JournaledCommits.attach(standby, standbyJournal, { after: position });
    await note(standby, 'served by the standby');

    // The old primary, still running, commits: refused (not acknowledged) and fenced for good.
    const refused = await note(primary, 'too late').catch((err: unknown) => err);
    expect(refused).toMatchObject({ code: 'NOT_JOURNALED', cause: { code: 'JOURNAL_FENCED' } });
    await expect(put(primary, 'k9', 9)).rejects.toMatchObject({ cause: { code: 'JOURNAL_FENCED' } });

    // The whole journal replayed into a fresh store is the standby's store.
    const fresh = openStore();
    await journalOf(await connectShard('s3'), 's3').replay(1, replayInto(fresh));
    expect(rows(fresh)).toEqual(rows(standby));
    expect(rows(fresh).events).toContainEqual({ id: 3, note: 'served by the standby' });
    await standbyLease.release();
    for (const store of [primary, standby, fresh]) store.close();
  }, 60_000);
});
