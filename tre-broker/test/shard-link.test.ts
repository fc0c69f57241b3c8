/**
 * The sealed link between shards (cluster/shard-link.ts) over one plain nats-server started here,
 * with three TREs on their own swtpm (each a real `startTre`: measured start, sealed TLS key, AK
 * certified by the one regulator CA). s1 and s2 run the whitelisted configuration; s3 runs one
 * the regulator's whitelist does not list. A spy subscribed to `>` plays NATS, which is outside
 * the trust boundary: it sees every subject and payload and may publish anything.
 * Shown: a body sent s1 -> s2 arrives with from 's1' and nothing on NATS carries its plaintext;
 * messages forged or replayed by the spy, or sealed by the untrusted s3, are refused and never
 * handled; s3 is never sent anything (send rejects naming the check). Delivery is acknowledged:
 * a message sent while s2 is down reaches it once it is back, a retry after a lost answer is
 * answered `duplicate` without running the handler again, a restarted s2 (a new encryption key)
 * answers `stale-key` and s1 attests the new run and reseals, a shard that stays down makes
 * send reject after the deadline, a handler failure rejects (STORAGE_UNAVAILABLE is retried).
 * The sealed envelope and AttestationService.evidence also have pure tests at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  X509Certificate,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { type Swtpm, startSwtpm, waitForListening } from '@tre/hardware';
import { type AttestationPolicy, type AttestationResponse, shardSubjects } from '@tre/protocol';
import {
  attestationPolicyFor,
  CertificateAuthority,
  createLogger,
  endorseAk,
  provisionTre,
  type RunningTre,
  startTre,
} from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  AttestationService,
  AttestationUnavailableError,
  type QuoteSource,
} from '../src/attestation/attestation-service.js';
import { measuredStart } from '../src/attestation/measured-start.js';
import type { MessageRouter } from '../src/broker/message-router.js';
import { freePorts } from '../src/cluster/nats-servers.js';
import {
  checkKeyEndorsement,
  endorseKey,
  keyId,
  open,
  paddedLength,
  readAnswer,
  type SealedEnvelopeError,
  seal,
  signAnswer,
} from '../src/cluster/sealed-envelope.js';
import { type SHARD_LINK_DEFAULTS, ShardLink } from '../src/cluster/shard-link.js';

const WHITELISTED = { fixture: true };
const UNLISTED = { fixture: true, release: 'unlisted' };
/** A household's data as a flow would send it: none of it may appear on NATS or in a log. */
const SECRET = 'hh-secret-meter-7731';

interface Shard {
  name: string;
  swtpm: Swtpm;
  tre: RunningTre;
  nats: NatsConnection;
  signingKey: KeyObject;
  certificate: string;
  link: ShardLink;
  got: { from: string; body: unknown }[];
  /** How long `test.slow` takes; how many times `test.busy` fails STORAGE_UNAVAILABLE before it works. */
  slowMs: number;
  busyFailures: number;
  /** Every run of a handler (a failed one too): kind and body. */
  runs: { kind: string; body: unknown }[];
}

let dir = '';
let natsServer: ChildProcess | undefined;
let natsUrl = '';
let ca: CertificateAuthority;
let root: X509Certificate;
const shards = new Map<string, Shard>();
const at = (name: string) => shards.get(name)!;
const connections: NatsConnection[] = [];
let spy: NatsConnection;
const crossed: { subject: string; data: Buffer }[] = [];
const logLines: string[] = [];
/** The regulator's whitelist of WHITELISTED, made once the TPM libraries are loaded (as measured). */
let policy: AttestationPolicy;

const logSink = new Writable({
  write(chunk, _enc, done) {
    logLines.push(String(chunk));
    done();
  },
});

async function startNatsServer(): Promise<void> {
  const port = (await freePorts(1))[0]!;
  let output = '';
  // The payload ceiling `tre cluster` sets (nats-servers.ts), so a large sealed message crosses.
  const config = join(dir, 'nats.conf');
  await writeFile(config, `max_payload: ${24 * 1024 * 1024}\n`);
  natsServer = spawn('nats-server', ['-c', config, '-a', '127.0.0.1', '-p', String(port)], { stdio: 'pipe' });
  natsServer.stdout?.on('data', (d) => {
    output += d;
  });
  natsServer.stderr?.on('data', (d) => {
    output += d;
  });
  await waitForListening(natsServer, port, {
    name: 'nats-server',
    installHint: 'install it (Debian: apt-get install nats-server)',
    output: () => output,
  });
  natsUrl = `127.0.0.1:${port}`;
}

async function natsFor(shard?: string): Promise<NatsConnection> {
  const nc = await connect({
    servers: natsUrl,
    ...(shard ? { inboxPrefix: shardSubjects.inboxPrefix(shard) } : {}),
    reconnect: false,
  });
  connections.push(nc);
  return nc;
}

/** A shard: its TRE enrolled on its own swtpm and started, and its NATS connection (no link yet). */
async function startShard(name: string, config: Record<string, unknown>): Promise<Shard> {
  const swtpm = await startSwtpm();
  const dataDir = join(dir, name, 'data');
  const treDir = join(dir, name, 'tre-pki');
  await provisionTre(ca, {
    tcti: swtpm.tcti,
    dataDir,
    pkiDir: treDir,
    treId: name,
    hosts: [],
    config,
    bootPcrs: [],
  });
  // The TLS key as the TRE itself holds it: unsealed by its measured start (startTre keeps its
  // copy to itself; the link is wired in tre.ts in production).
  const measured = measuredStart(swtpm.tcti, dataDir, config);
  measured.tpm.close();
  const signingKey = createPrivateKey(measured.secrets.tlsKey);
  const tre = await startTre({
    pkiDir: treDir,
    dataDir,
    port: 0,
    log: createLogger({ level: 'silent' }),
    measuredConfig: config,
    tpm: { tcti: swtpm.tcti, akCertificate: (tpm) => endorseAk(tpm, ca, name, { allowUncertifiedEk: true }) },
  });
  const certificate = await readFile(join(treDir, 'tre.crt'), 'utf8');
  const nats = await natsFor(name);
  return {
    name,
    swtpm,
    tre,
    nats,
    signingKey,
    certificate,
    link: undefined!,
    got: [],
    slowMs: 0,
    busyFailures: 0,
    runs: [],
  };
}

async function startLink(shard: Shard, tuning: Partial<typeof SHARD_LINK_DEFAULTS> = {}): Promise<ShardLink> {
  const link = new ShardLink({
    ...tuning,
    nats: shard.nats,
    shard: shard.name,
    treCertificate: shard.certificate,
    signingKey: shard.signingKey,
    evidence: (nonce) => shard.tre.attestation!.service.evidence(nonce),
    trust: {
      regulatorRoot: root,
      regulatorCrl: () => readFileSync(join(dir, 'pki', 'crl.pem'), 'utf8'),
      policy,
    },
    log: createLogger({ level: 'debug', destination: logSink }).child({ tre: shard.name }),
    // Small waits, so that a shard down costs seconds, not a minute.
    attestBackoffMs: 50,
    attestTimeoutMs: 2_000,
    attestAttempts: 2,
    deliveryTimeoutMs: 2_000,
    deliveryBackoffMs: 50,
    deliveryBackoffMaxMs: 200,
    deliveryDeadlineMs: 10_000,
    ...tuning,
  });
  const note = (kind: string) => async (from: string, body: unknown) => {
    shard.runs.push({ kind, body });
    shard.got.push({ from, body });
  };
  link.on('test.note', note('test.note'));
  link.on('test.slow', async (from, body) => {
    await sleep(shard.slowMs);
    await note('test.slow')(from, body);
  });
  link.on('test.fail', async (_from, body) => {
    shard.runs.push({ kind: 'test.fail', body });
    z.strictObject({ amount: z.number() }).parse(body); // what flows do with a body they cannot take
  });
  link.on('test.busy', async (from, body) => {
    shard.runs.push({ kind: 'test.busy', body });
    if (shard.busyFailures-- > 0)
      throw Object.assign(new Error(`disk full writing ${JSON.stringify(body)}`), {
        code: 'STORAGE_UNAVAILABLE',
      });
    shard.got.push({ from, body });
  });
  link.on('test.relay', async (from, body) => {
    // A handler of a message to itself sending itself another (it runs at once, no deadlock).
    await link.send(shard.name, 'test.note', { relayed: body });
    shard.got.push({ from, body });
  });
  await link.start();
  return link;
}

/** Waits (bounded) until `done()` holds: a condition, not a duration. */
async function until(what: string, done: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The payload as bytes and each compact-serialisation segment decoded, to search for plaintext. */
function readable(data: Buffer): string {
  const text = data.toString('utf8');
  const segments = text.split('.').map((s) => Buffer.from(s, 'base64url').toString('latin1'));
  return [text, ...segments].join('\n');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shard-link-'));
  ({ ca } = await CertificateAuthority.init(join(dir, 'pki')));
  root = new X509Certificate(await readFile(join(dir, 'pki', 'ca.crt')));
  await startNatsServer();
  spy = await natsFor();
  spy.subscribe('>', {
    callback: (err, msg) => {
      if (!err) crossed.push({ subject: msg.subject, data: Buffer.from(msg.data) });
    },
  });
  await spy.flush();
  for (const [name, config] of [
    ['s1', WHITELISTED],
    ['s2', WHITELISTED],
    ['s3', UNLISTED],
  ] as const)
    shards.set(name, await startShard(name, config));
  // The regulator's whitelist, measured as `tre attest-policy` does on a reference device: in this
  // process, now that it maps what the TREs map (the TPM stack).
  policy = attestationPolicyFor(WHITELISTED, { policyId: 'shards' });
  for (const s of shards.values()) s.link = await startLink(s);
});

afterAll(async () => {
  for (const s of shards.values()) await s.link?.stop();
  for (const nc of connections) await nc.close().catch(() => {});
  for (const s of shards.values()) {
    await s.tre.stop();
    await s.swtpm.stop();
  }
  if (natsServer && natsServer.exitCode === null) {
    const exited = new Promise((r) => natsServer!.once('exit', r));
    natsServer.kill('SIGTERM');
    await exited;
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('shard link over NATS, TREs on swtpm', () => {
  it('a body sent s1 -> s2 arrives from s1; NATS carries no plaintext of it, padded to one size', async () => {
    await at('s1').link.send('s2', 'test.note', { meterId: SECRET, energyWh: 4242 });
    await at('s1').link.send('s2', 'test.note', { meterId: `${SECRET}-and-a-longer-body`, energyWh: 1 });
    await until('both notes at s2', () => at('s2').got.length === 2);
    expect(at('s2').got).toEqual([
      { from: 's1', body: { meterId: SECRET, energyWh: 4242 } },
      { from: 's1', body: { meterId: `${SECRET}-and-a-longer-body`, energyWh: 1 } },
    ]);
    const sealed = crossed.filter((c) => c.subject === shardSubjects.message('s2', 's1'));
    expect(sealed).toHaveLength(2);
    expect(sealed[0]!.data.length).toBe(sealed[1]!.data.length); // small messages look alike
    for (const c of crossed) {
      expect(readable(c.data)).not.toContain(SECRET);
      expect(readable(c.data)).not.toContain('4242');
    }
    // What crossed: hello requests and answers (public material), and sealed messages.
    for (const c of crossed)
      expect(c.subject).toMatch(/^(tre\.hello\.s[123]|_INBOX\.s[123]\..+|tre\.shard\.s\d\.from\.s\d)$/);
    expect(at('s1').link.stats).toMatchObject({ sent: 2, retries: 0, attestations: { trusted: 1 } });
    expect(at('s2').link.stats).toMatchObject({ received: 2, duplicates: 0, attestations: { trusted: 1 } });
    // Each was answered on s1's inbox, signed by s2: `handled`, no body.
    const answers = crossed.filter((c) => c.subject.startsWith('_INBOX.s1.') && c.data.length < 1024);
    const read = await Promise.all(
      answers.map((a) =>
        readAnswer(a.data.toString(), { tlsKey: createPublicKey(at('s2').signingKey), from: 's2', to: 's1' }),
      ),
    );
    expect(read.filter((a) => a?.status === 'handled')).toHaveLength(2);
  });

  it('sending to its own shard runs the handler in process, with nothing on NATS', async () => {
    const before = crossed.length;
    await at('s1').link.send('s1', 'test.note', { meterId: SECRET });
    expect(at('s1').got).toEqual([{ from: 's1', body: { meterId: SECRET } }]); // ran before send resolved
    // A handler of such a message sending itself another: that one runs at once, inside it.
    await at('s1').link.send('s1', 'test.relay', { n: 1 });
    expect(at('s1').got.slice(1)).toEqual([
      { from: 's1', body: { relayed: { n: 1 } } },
      { from: 's1', body: { n: 1 } },
    ]);
    await expect(at('s1').link.send('s1', 'test.fail', { amount: 'lots' })).rejects.toMatchObject({
      code: 'HANDLER_FAILED',
      reason: 'ZodError',
    });
    expect(at('s1').link.busy).toBe(0);
    at('s1').got = [];
    expect(crossed.slice(before).filter((c) => c.subject.startsWith('tre.shard.'))).toEqual([]);
  });

  it('messages forged or replayed on NATS are refused and never handled', async () => {
    const s2 = at('s2');
    const handled = s2.got.length;
    // The spy learns s2's encryption key like anyone on NATS: it asks s2's hello.
    const hello = await spy.request(
      shardSubjects.hello('s2'),
      JSON.stringify({ v: 1, nonce: randomBytes(32).toString('base64url') }),
      { timeout: 10_000 },
    );
    const { encryptionKey } = JSON.parse(new TextDecoder().decode(hello.data)) as {
      encryptionKey: { kty: string; crv: string; x: string; y: string };
    };
    // Sealed to s2 and claiming s1, but signed with a key that is not s1's attested TLS key.
    const forger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const forged = await seal(
      { meterId: 'forged' },
      { kind: 'test.note', from: 's1', to: 's2', signingKey: forger, recipientKey: encryptionKey },
    );
    spy.publish(shardSubjects.message('s2', 's1'), forged);
    await until('the forgery refused', () => s2.link.stats.refused['bad-signature'] === 1);
    // A genuine s1 -> s2 message replayed verbatim: a known id, answered, not handled again.
    const genuine = crossed.find((c) => c.subject === shardSubjects.message('s2', 's1'))!;
    spy.publish(shardSubjects.message('s2', 's1'), genuine.data);
    await until('the replay known', () => s2.link.stats.duplicates === 1);
    // Garbage on a sender's subject.
    spy.publish(shardSubjects.message('s2', 's1'), 'not a JWE');
    await until('garbage refused', () => s2.link.stats.refused.malformed === 1);
    // Sealed properly by a TRE whose release is not whitelisted (s3 trusts s2, s2 does not trust
    // s3): refused, and s3 is told so (no retries: it would be refused again).
    await expect(at('s3').link.send('s2', 'test.note', { meterId: 'from-s3' })).rejects.toMatchObject({
      code: 'REFUSED',
      reason: 'untrusted-sender',
      peer: 's2',
      message: expect.stringMatching(/^shard s2 refused the test\.note message \(untrusted-sender\)/),
    });
    expect(s2.link.stats.refused['unattested-sender']).toBe(1);
    expect(at('s3').link.stats).toMatchObject({ retries: 0, undelivered: 1 });
    expect(s2.got.length).toBe(handled);
    expect(s2.link.stats.attestations).toMatchObject({ untrusted: 1 });
  });

  it('a shard whose evidence fails the whitelist is never sent anything: send rejects naming the check', async () => {
    const s1 = at('s1');
    const answered = at('s3').link.stats.helloAnswered;
    await expect(s1.link.send('s3', 'test.note', { meterId: SECRET })).rejects.toMatchObject({
      name: 'ShardLinkError',
      code: 'PEER_UNTRUSTED',
      peer: 's3',
      check: 'whitelist',
      message: expect.stringMatching(/shard s3 is not trusted \(whitelist: .*config release="unlisted"/),
    });
    // Asked again within the cooldown: refused from the cache, no second hello.
    await expect(s1.link.send('s3', 'test.note', {})).rejects.toMatchObject({ code: 'PEER_UNTRUSTED' });
    expect(at('s3').link.stats.helloAnswered).toBe(answered + 1);
    expect(crossed.filter((c) => c.subject === shardSubjects.message('s3', 's1'))).toEqual([]);
    expect(at('s3').got).toEqual([]);
  });

  it('a shard nobody answers for is reported unreachable by name, after a bounded number of tries', async () => {
    // The spy's `>` subscription takes every hello, so requests time out (no "no responders"):
    // a link of s1's TRE with short timeouts asks.
    const probe = await startLink(
      { ...at('s1'), name: 'probe', nats: await natsFor('probe') },
      {
        attestTimeoutMs: 200,
        attestAttempts: 3,
        deliveryDeadlineMs: 1_000,
      },
    );
    await expect(probe.send('s9', 'test.note', { meterId: SECRET })).rejects.toMatchObject({
      code: 'PEER_UNREACHABLE',
      peer: 's9',
      message: expect.stringMatching(
        /^shard s9 could not be attested within 1 s \(last: shard s9 did not answer its attestation request on tre\.hello\.s9 \(\d attempts.*Nothing was sent to it/,
      ),
    });
    expect(probe.stats.attestations.unreachable).toBeGreaterThanOrEqual(1);
    expect(probe.stats.undelivered).toBe(1);
    await probe.stop();
    expect(crossed.filter((c) => c.subject.startsWith('tre.shard.s9.'))).toEqual([]);
  });

  it('a message sent while s2 is down reaches it once it is back: its handler runs once', async () => {
    const s1 = at('s1');
    const s2 = at('s2');
    await s2.link.stop(); // down: nothing listens on its subjects (the spy's `>` takes, never answers)
    s2.got = [];
    const retries = s1.link.stats.retries;
    const sending = s1.link.send('s2', 'test.note', { meterId: SECRET, n: 'while-down' });
    await until('s1 retrying', () => s1.link.stats.retries > retries);
    expect(s1.link.busy).toBeGreaterThan(0);
    s2.link = await startLink(s2); // back, as a new run (a new key)
    await sending;
    expect(s2.got).toEqual([{ from: 's1', body: { meterId: SECRET, n: 'while-down' } }]);
    expect(s2.link.stats).toMatchObject({ received: 1, duplicates: 0 });
    expect(s1.link.busy).toBe(0);
    await sleep(300); // and not again later
    expect(s2.got).toHaveLength(1);
  });

  it('a retry after a lost answer runs the handler once: the retry is answered `duplicate`', async () => {
    const s1 = at('s1');
    const s2 = at('s2');
    s2.got = [];
    s2.slowMs = 2_500; // longer than s1 waits for an answer (2 s): the first answer comes too late
    const before = { retries: s1.link.stats.retries, duplicates: s2.link.stats.duplicates };
    await s1.link.send('s2', 'test.slow', { meterId: SECRET, n: 'slow' });
    s2.slowMs = 0;
    expect(s2.got).toEqual([{ from: 's1', body: { meterId: SECRET, n: 'slow' } }]);
    expect(s1.link.stats.retries).toBe(before.retries + 1);
    expect(s2.link.stats.duplicates).toBe(before.duplicates + 1);
    // Both tries carried one id (two sealed messages, one handled).
    expect(s2.runs.filter((r) => r.kind === 'test.slow')).toHaveLength(1);
  });

  it('after s2 restarts (a new encryption key), it answers stale-key and s1 attests the new run and reseals', async () => {
    const s1 = at('s1');
    const s2 = at('s2');
    await s2.link.stop();
    s2.got = [];
    s2.link = await startLink(s2); // a new run: a new key pair; s1 still holds the old public key
    const before = { rekeys: s1.link.stats.rekeys, retries: s1.link.stats.retries };
    await s1.link.send('s2', 'test.note', { meterId: SECRET, n: 1 }); // first sealed to the old key
    expect(s2.got).toEqual([{ from: 's1', body: { meterId: SECRET, n: 1 } }]);
    expect(s2.link.stats.refused['stale-key']).toBe(1);
    expect(s1.link.stats).toMatchObject({ rekeys: before.rekeys + 1, retries: before.retries + 1 });
    await s1.link.send('s2', 'test.note', { n: 2 }); // the new key from now on
    expect(s2.got).toHaveLength(2);
    expect(s2.link.stats.refused['stale-key']).toBe(1);
  });

  it("a handler's failure rejects send (not retried); STORAGE_UNAVAILABLE is retried until it commits", async () => {
    const s1 = at('s1');
    const s2 = at('s2');
    const retries = s1.link.stats.retries;
    await expect(s1.link.send('s2', 'test.fail', { amount: SECRET })).rejects.toMatchObject({
      code: 'HANDLER_FAILED',
      peer: 's2',
      reason: 'ZodError',
      message: expect.stringMatching(/^the test\.fail handler of shard s2 failed \(ZodError\): not retried/),
    });
    expect(s2.runs.filter((r) => r.kind === 'test.fail')).toHaveLength(1);
    expect(s1.link.stats.retries).toBe(retries);
    s2.busyFailures = 2;
    s2.got = [];
    await s1.link.send('s2', 'test.busy', { n: 'busy' });
    expect(s2.runs.filter((r) => r.kind === 'test.busy')).toHaveLength(3); // failed twice, then committed
    expect(s2.got).toEqual([{ from: 's1', body: { n: 'busy' } }]);
    expect(s1.link.stats.retries).toBe(retries + 2);
  });

  it('a shard that stays down: send rejects after the deadline, naming it and what to check', async () => {
    const s1 = at('s1');
    const s2 = at('s2');
    await s1.link.stop();
    s1.got = [];
    s1.link = await startLink(s1, { deliveryDeadlineMs: 2_500 });
    await s1.link.send('s2', 'test.note', { n: 'attested' }); // s1's new run attests s2
    await s2.link.stop();
    s2.got = [];
    const started = Date.now();
    await expect(s1.link.send('s2', 'test.note', { meterId: SECRET })).rejects.toMatchObject({
      name: 'ShardLinkError',
      code: 'NOT_DELIVERED',
      peer: 's2',
      message: expect.stringMatching(
        /^shard s2 did not acknowledge the test\.note message within 3 s \(\d+ tries; last: .*\); it may or may not have been handled: is shard s2 \(its primary or a standby\) running and connected to NATS/,
      ),
    });
    expect(Date.now() - started).toBeLessThan(8_000);
    expect(s1.link.stats.undelivered).toBe(1);
    expect(s1.link.busy).toBe(0);
    s2.link = await startLink(s2);
    await sleep(300);
    expect(s2.got).toEqual([]); // nothing arrives later: the sender gave up
  });

  it("a 6 MB body (11 MB sealed: over NATS's default ceilings) crosses; one over max_payload is refused at once", async () => {
    const s1 = at('s1');
    const s2 = at('s2');
    s2.got = [];
    const big = 'r'.repeat(6_000_000);
    await s1.link.send('s2', 'test.note', { big });
    expect(s2.got).toHaveLength(1);
    expect((s2.got[0]!.body as { big: string }).big).toBe(big);
    const max = s1.nats.info!.max_payload;
    const started = Date.now();
    await expect(
      s1.link.send('s2', 'test.note', { big: 'r'.repeat(Math.ceil(max / 1.7)) }),
    ).rejects.toMatchObject({
      code: 'TOO_LARGE',
      peer: 's2',
      message: expect.stringMatching(/over NATS's max_payload of \d+: nothing was sent/),
    });
    expect(Date.now() - started).toBeLessThan(5_000); // not retried
    expect(s2.got).toHaveLength(1);
    s2.got = [];
  });

  it('no log line carries a body', () => {
    expect(logLines.length).toBeGreaterThan(0);
    for (const line of logLines) {
      expect(line).not.toContain(SECRET);
      expect(line).not.toContain('4242');
    }
  });
});

describe('sealed envelope (pure)', () => {
  const tls = (name: string) => ({ name, ...generateKeyPairSync('ec', { namedCurve: 'P-256' }) });
  const enc = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const s1 = tls('s1');
  const s3 = tls('s3');
  const s2Enc = enc();
  const known = (s: string) => ({ s1: s1.publicKey, s3: s3.publicKey })[s];
  const sealFrom = (from: typeof s1, to: string, recipientKey: KeyObject, body: unknown = { a: 1 }) =>
    seal(body, { kind: 'test.note', from: from.name, to, signingKey: from.privateKey, recipientKey });
  const openAs = (jwe: string, sender: string, decryptionKey = s2Enc.privateKey) =>
    open(jwe, { decryptionKey, to: 's2', sender, senderKey: known });
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => 'opened',
      (err: SealedEnvelopeError) => err.code,
    );

  it('opens what was sealed to it, and refuses by name what was not for it or not from whom it says', async () => {
    const jwe = await sealFrom(s1, 's2', s2Enc.publicKey, { x: [1, 2] });
    expect(await openAs(jwe, 's1')).toMatchObject({ kind: 'test.note', from: 's1', body: { x: [1, 2] } });
    expect(await refusal(openAs(jwe, 's3'))).toBe('sender-mismatch'); // relayed onto s3's subject
    expect(await refusal(openAs(await sealFrom(s1, 's4', s2Enc.publicKey), 's1'))).toBe('wrong-recipient');
    expect(await refusal(openAs(jwe, 's1', enc().privateKey))).toBe('stale-key');
    const claimsS1 = await seal(
      {},
      { kind: 'test.note', from: 's1', to: 's2', signingKey: s3.privateKey, recipientKey: s2Enc.publicKey },
    );
    expect(await refusal(openAs(claimsS1, 's1'))).toBe('bad-signature');
    expect(
      await refusal(
        open(jwe, { decryptionKey: s2Enc.privateKey, to: 's2', sender: 's1', senderKey: () => undefined }),
      ),
    ).toBe('unknown-sender');
    const [h, k, iv, c, t] = jwe.split('.');
    const flipped = `${c![0] === 'A' ? 'B' : 'A'}${c!.slice(1)}`;
    expect(await refusal(openAs([h, k, iv, flipped, t].join('.'), 's1'))).toBe('undecryptable');
  });

  it('pads to size buckets: small bodies look alike, a large one shows its order of magnitude', async () => {
    const small = await sealFrom(s1, 's2', s2Enc.publicKey, { a: 1 });
    const less = await sealFrom(s1, 's2', s2Enc.publicKey, { a: 'x'.repeat(300) });
    expect(small.length).toBe(less.length);
    expect([1, 1024, 1025, 5000, 65_536, 65_537].map(paddedLength)).toEqual([
      1024, 1024, 2048, 8192, 65_536, 131_072,
    ]);
  });

  it('a retry resealed to a new key keeps the id it is given; every seal gets its own otherwise', async () => {
    const id = (await openAs(await sealFrom(s1, 's2', s2Enc.publicKey), 's1')).id;
    const other = (await openAs(await sealFrom(s1, 's2', s2Enc.publicKey), 's1')).id;
    expect(other).not.toBe(id);
    const next = enc(); // the receiver restarted
    const resealed = await seal(
      { a: 1 },
      {
        kind: 'test.note',
        from: 's1',
        to: 's2',
        signingKey: s1.privateKey,
        recipientKey: next.publicKey,
        id,
      },
    );
    expect(await openAs(resealed, 's1', next.privateKey)).toMatchObject({ id });
  });

  it('an answer reads only with the key of the shard that signed it, between the shards it names', async () => {
    const answer = { v: 1 as const, from: 's2', to: 's1', id: 'A'.repeat(22), status: 'handled' as const };
    const jws = await signAnswer(answer, s3.privateKey); // s3's key plays s2's TLS key here
    expect(await readAnswer(jws, { tlsKey: s3.publicKey, from: 's2', to: 's1' })).toEqual(answer);
    expect(await readAnswer(jws, { tlsKey: s1.publicKey, from: 's2', to: 's1' })).toBeUndefined();
    expect(await readAnswer(jws, { tlsKey: s3.publicKey, from: 's2', to: 's4' })).toBeUndefined();
    expect(await readAnswer('not a jws', { tlsKey: s3.publicKey, from: 's2', to: 's1' })).toBeUndefined();
    // An answer carries a code, never free text (a handler's message may quote the body).
    await expect(
      signAnswer({ ...answer, status: 'failed', reason: 'meter hh-1 is unknown' }, s3.privateKey),
    ).rejects.toThrow();
  });

  it('a key endorsement holds for exactly its shard, key and nonce', async () => {
    const thumbprint = await keyId(s2Enc.publicKey);
    const nonce = randomBytes(32);
    const jws = await endorseKey({ shard: 's2', thumbprint, nonce, signingKey: s1.privateKey });
    const check = (o: Partial<Parameters<typeof checkKeyEndorsement>[1]>) =>
      checkKeyEndorsement(jws, { shard: 's2', thumbprint, nonce, tlsKey: s1.publicKey, ...o });
    expect(await check({})).toBeUndefined();
    expect(await check({ tlsKey: s3.publicKey })).toMatch(/not by the TLS key/);
    expect(await check({ nonce: randomBytes(32) })).toMatch(/not for our nonce/);
    expect(await check({ thumbprint: await keyId(enc().publicKey) })).toMatch(/another encryption key/);
    expect(await check({ shard: 's3' })).toMatch(/names shard s2/);
  });
});

describe('AttestationService.evidence', () => {
  /** A router that records replies, and the handler the service registers. */
  function fakeRouter() {
    const replies: AttestationResponse[] = [];
    let handler: ((msg: unknown) => Promise<unknown>) | undefined;
    const router = {
      on: (_family: string, h: (msg: unknown) => Promise<unknown>) => {
        handler = h;
      },
      reply: async (_to: unknown, _kind: string, response: AttestationResponse) => {
        replies.push(response);
      },
    } as unknown as MessageRouter;
    const ask = (nonce: Buffer) =>
      handler!({
        from: { role: 'meter', id: 'm1', serial: '1', publicKey: s1Key },
        topic: { scope: 'party' },
        payload: Buffer.from(JSON.stringify({ v: 1, requestId: 'r-1', nonce: nonce.toString('base64url') })),
      });
    return { router, replies, ask };
  }
  const s1Key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
  const quote: QuoteSource['quote'] = async () => ({
    attest: Buffer.from('a'),
    signature: Buffer.from('s'),
    pcrs: [],
  });
  const service = (source: QuoteSource, router: MessageRouter) =>
    new AttestationService({
      router,
      log: createLogger({ level: 'silent' }),
      treCertificate: at('s1').certificate,
      source,
      eventLog: () => [],
      akCertificate: 'ak',
    });

  it('joins the MQTT batch: one quote answers a meter and a shard', async () => {
    const { router, replies, ask } = fakeRouter();
    const svc = service({ quote }, router);
    svc.start();
    await ask(randomBytes(32));
    const evidence = await svc.evidence(randomBytes(32));
    await svc.stop();
    expect(svc.stats).toEqual({ requests: 2, quotes: 1, failures: 0 });
    expect(replies).toHaveLength(1);
    expect(replies[0]!.evidence!.batch.root).toBe(evidence.batch.root);
    expect(evidence.batch.leafCount).toBe(2);
  });

  it('rejects when the TPM is unavailable, while the meter is told `unavailable`', async () => {
    const { router, replies, ask } = fakeRouter();
    const svc = service({ quote: async () => Promise.reject(new Error('TPM gone')) }, router);
    svc.start();
    await ask(randomBytes(32));
    await expect(svc.evidence(randomBytes(32))).rejects.toBeInstanceOf(AttestationUnavailableError);
    await svc.stop();
    expect(replies[0]).toMatchObject({ status: 'unavailable' });
  });
});
