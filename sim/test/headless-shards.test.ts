/**
 * `tre-sim run --shards 3` end to end: 36 households in three attested TRE shards (s1..s3, each on
 * its own swtpm) over a real 3-node NATS cluster, the regulator and DSM on s1, the DNO on s2, the
 * supplier on s3. Households are placed in blocks of 12 and the DNO's feeders are blocks of 9, so
 * feeders 1 and 4 live in one shard and feeders 2 and 3 span two (released once by their owner
 * shard: the shards' releases add up to the DNO's, so no member drew noise of its own). DR credits
 * land in each household's own shard's ledger, one per accepted bid. Over the first simulated hours (as the demo starts: a DR event at once, a billing period
 * ending two hours in) every invariant holds over the cluster, a DR round collects bids from all
 * three shards, and statements come from every shard.
 * NATS is outside the trust boundary: the regulator's admin client, subscribed to `>` from before
 * the first shard joined until the end, records every message; none names a meter, an account or
 * a bid, or carries a reading, in clear (raw bytes, and each base64url segment decoded: the JWE
 * header and the binary parts of sealed messages; the hello exchanges are public JSON).
 * A cluster whose set-up fails (no nats-server on the PATH) says what is missing and leaves no
 * swtpm and no temporary state behind (`tre-sim run --shards 3` as a child process).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { processesUnder } from '@tre/hardware';
import { describe, expect, it } from 'vitest';
import { Simulation } from '../src/simulation/simulation.js';

const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

interface Recorded {
  subject: string;
  data: Buffer;
}

/** The raw bytes as text, and each `.`-separated segment base64url-decoded. */
function decodedSegments(data: Buffer): string[] {
  return data
    .toString('latin1')
    .split('.')
    .map((s) => Buffer.from(s, 'base64url').toString('latin1'));
}

/** What kind of message this is: a hello request or answer (public JSON), or sealed (compact JWE). */
function kindOf(m: Recorded): 'hello' | 'hello-answer' | 'sealed' | 'other' {
  if (/^tre\.hello\.s\d$/.test(m.subject)) return 'hello';
  if (/^_INBOX\.s\d\./.test(m.subject)) return 'hello-answer';
  if (/^tre\.shard\.s\d\.from\.s\d$/.test(m.subject) && m.data.toString('latin1').split('.').length === 5)
    return 'sealed';
  return 'other';
}

/**
 * What a recorded message shows in clear: a secret (meter id, account, bid id) quoted in the raw
 * bytes (base64url text has no quotes) or as-is in the subject or a decoded segment; a reading as a
 * JSON number (after a key or in an array) or any energy field, in the raw bytes or a JWE header.
 */
function leaksIn(recorded: readonly Recorded[], secrets: readonly string[], readings: Set<number>): string[] {
  const leaks: string[] = [];
  for (const m of recorded) {
    const raw = m.data.toString('latin1');
    const sealed = kindOf(m) === 'sealed';
    const texts = sealed ? decodedSegments(m.data) : [raw];
    for (const secret of secrets)
      if (m.subject.includes(secret) || raw.includes(`"${secret}"`) || texts.some((t) => t.includes(secret)))
        leaks.push(`${m.subject}: ${secret}`);
    for (const text of sealed ? [raw, texts[0]!] : [raw]) {
      if (/Wh"\s*:/.test(text)) leaks.push(`${m.subject}: an energy field`);
      for (const n of text.matchAll(/[:,[]\s*(\d+)(?=\s*[,}\]])/g))
        if (readings.has(Number(n[1]))) leaks.push(`${m.subject}: the number ${n[1]}`);
    }
  }
  return leaks;
}

/** A compact JWE-shaped message with this protected header (the rest random). */
function jweWithHeader(header: unknown): Buffer {
  const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');
  const random = () => b64(Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)));
  return Buffer.from([b64(JSON.stringify(header)), random(), random(), random(), random()].join('.'));
}

describe('the scan for data in clear', () => {
  it('finds a meter id, an account or a reading in a plaintext body or a JWE header, not in ciphertext', () => {
    const secrets = ['h00007', 'acct-1a2b3c4d'];
    const readings = new Set([321]);
    const subject = 'tre.shard.s2.from.s1';
    expect(
      leaksIn(
        [
          { subject, data: Buffer.from('{"meterId":"h00007","importWh":321}') },
          { subject, data: jweWithHeader({ alg: 'ECDH-ES+A256KW', kid: 'acct-1a2b3c4d' }) },
          { subject, data: jweWithHeader({ alg: 'ECDH-ES+A256KW', n: [5, 321] }) },
          { subject, data: jweWithHeader({ alg: 'ECDH-ES+A256KW', kid: 'k1' }) },
        ],
        secrets,
        readings,
      ),
    ).toEqual([
      `${subject}: h00007`,
      `${subject}: an energy field`,
      `${subject}: the number 321`,
      `${subject}: acct-1a2b3c4d`,
      `${subject}: the number 321`,
    ]);
  });
});

describe('headless simulation over three shards', () => {
  it('keeps every invariant over the cluster; NATS carries nothing in clear', {
    timeout: 180_000,
  }, async () => {
    const recorded: Recorded[] = [];
    let observer: NatsConnection | undefined;
    const wallStart = performance.now();
    const sim = await Simulation.create({
      households: 36,
      shards: 3,
      days: 0.3,
      speed: 1_000_000,
      startMs: Date.UTC(2026, 0, 12, 6),
      earlyRounds: true,
      onNats: async ({ urls, admin }) => {
        const [ca, cert, key] = await Promise.all(
          [admin.ca, admin.cert, admin.key].map((f) => readFile(f, 'utf8')),
        );
        observer = await connect({ servers: urls, tls: { ca, cert, key }, name: 'regulator-observer' });
        observer.subscribe('>', {
          callback: (err, msg) => {
            if (!err) recorded.push({ subject: msg.subject, data: Buffer.from(msg.data) });
          },
        });
        await observer.flush();
      },
    });
    const setUpSeconds = (performance.now() - wallStart) / 1000;
    const running = await processesUnder(sim.dir);
    try {
      const summary = await sim.run();
      await observer?.flush();
      for (const inv of summary.invariants) expect(inv.holds, `${inv.name}: ${inv.detail}`).toBe(true);
      console.info(
        `3 shards, 36 households: set-up ${setUpSeconds.toFixed(1)} s, ${summary.days} days in ${summary.wallSeconds.toFixed(1)} s\n` +
          summary.invariants.map((i) => `  ${i.name}: ${i.detail}`).join('\n'),
      );

      // Households in blocks: 12 per shard, each stored only in its own shard (the readings invariant).
      expect(sim.shards.map((s) => s.name)).toEqual(['s1', 's2', 's3']);
      expect(sim.shards.map((s) => sim.homes.filter((h) => h === s).length)).toEqual([12, 12, 12]);
      for (const s of sim.shards) expect(s.tre.readings.storedEnergies().length).toBeGreaterThan(0);

      // DNO releases, some of groups spanning two shards (released once, by their owner shard).
      const dp = sim.dpCheck();
      expect(dp.spanning).toBeGreaterThan(0);
      expect(dp.releases - dp.spanning).toBeGreaterThan(0);
      expect(sim.shards.reduce((n, s) => n + s.tre.monitoring.stats.lateShards, 0)).toBe(0);
      for (const [groupId, releases] of sim.dno.releases) {
        const starts = releases.map((r) => r.intervalStart);
        expect(new Set(starts).size, `${groupId} released once per interval`).toBe(starts.length);
      }

      // Each release drawn by exactly one shard (its owner, which adds the only noise sample: the
      // members send exact partial sums): the shards' releases add up to what the DNO received.
      const dnoReleases = [...sim.dno.releases.values()].reduce((n, r) => n + r.length, 0);
      expect(sim.shards.reduce((n, s) => n + s.tre.monitoring.stats.released, 0)).toBe(dnoReleases);

      // One DR round through the DSM's shard (s1): bids from all three shards, some accepted.
      const [round] = sim.drRounds();
      expect(sim.drRounds()).toHaveLength(1);
      expect(round!.accepted).toBeGreaterThan(0);
      const outcomeShards = new Set(
        sim.households.flatMap((h, i) => (h.agent.outcomes.length > 0 ? [sim.homes[i]!.name] : [])),
      );
      expect([...outcomeShards].sort()).toEqual(['s1', 's2', 's3']);
      expect(round!.delivered + round!.notDelivered).toBe(round!.accepted);
      // Credits land in the ledger of each household's own shard, one per accepted bid, none elsewhere.
      const shardOfMeter = new Map(sim.households.map((h, i) => [h.id.meterId, sim.homes[i]!.name]));
      let credits = 0;
      for (const s of sim.shards) {
        const lines = s.tre.store.db
          .prepare("SELECT meter_id AS meterId FROM ledger WHERE kind = 'dr-credit'")
          .all() as { meterId: string }[];
        for (const l of lines)
          expect(shardOfMeter.get(l.meterId), `credit of ${l.meterId} in ${s.name}`).toBe(s.name);
        credits += lines.length;
      }
      expect(credits).toBe(round!.accepted);

      // The first billing period: one statement per household, from every shard.
      const accounts = new Set([...sim.supplier.statements.values()].map((st) => st.account));
      expect(accounts.size).toBe(36);

      // Every sealed message was opened and handled: none refused (e.g. stale after a clock step).
      for (const s of sim.shards) {
        const { refused, handlerErrors } = s.tre.cluster!.link.stats;
        expect({
          shard: s.name,
          refused: Object.values(refused).reduce((a, b) => a + b, 0),
          handlerErrors,
        }).toEqual({
          shard: s.name,
          refused: 0,
          handlerErrors: 0,
        });
      }

      // NATS: hello exchanges and sealed messages only, nothing in clear.
      const kinds = new Map<string, number>();
      for (const m of recorded) kinds.set(kindOf(m), (kinds.get(kindOf(m)) ?? 0) + 1);
      expect(
        kinds.get('other') ?? 0,
        `unexpected subjects: ${recorded.filter((m) => kindOf(m) === 'other').map((m) => m.subject)}`,
      ).toBe(0);
      expect(kinds.get('sealed')).toBeGreaterThan(50);
      expect(kinds.get('hello')).toBeGreaterThan(0);
      const secrets = [
        ...sim.households.map((h) => h.id.meterId),
        ...sim.households.flatMap((h) => [...h.agent.proposals.keys()]),
        ...[...sim.supplier.statements.values()].map((st) => st.account),
      ];
      expect(secrets.length).toBeGreaterThan(36 * 2);
      const readings = new Set(sim.households.flatMap((h) => [...h.sent.values()]).filter((wh) => wh >= 100));
      const leaks = leaksIn(recorded, secrets, readings);
      expect(leaks).toEqual([]);

      // Each shard counts its traffic with the others on /metrics: counts only, no identifier.
      for (const s of sim.shards) {
        const { address, port } = s.tre.metrics!.address;
        const text = await (await fetch(`http://${address}:${port}/metrics`)).text();
        const value = (line: string) =>
          Number(
            text
              .split('\n')
              .find((l) => l.startsWith(line))
              ?.split(' ')
              .at(-1),
          );
        expect(value('tre_shard_messages_total{direction="sent"}')).toBeGreaterThan(0);
        expect(value('tre_shard_messages_total{direction="received"}')).toBeGreaterThan(0);
        expect(value('tre_shard_attestations_total{verdict="trusted"}')).toBeGreaterThanOrEqual(1);
        expect(value('tre_dp_late_shards_total')).toBe(0);
        for (const secret of secrets) expect(text).not.toContain(secret);
      }
      const bytes = recorded.reduce((n, m) => n + m.data.length, 0);
      console.info(
        `NATS: ${recorded.length} messages (${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}), ${bytes} bytes; scanned for ${secrets.length} identifiers and ${readings.size} reading values`,
      );
    } finally {
      await observer?.close();
      await sim.stop();
    }
    // Stopped: none of the 3 nats-servers and 3 swtpms (all run under the working directory) left.
    expect(running).toHaveLength(6);
    expect(sim.nats!.nodes.some((n) => n.alive)).toBe(false);
    expect(await processesUnder(sim.dir)).toEqual([]);
  });
});

describe('a cluster whose set-up fails', () => {
  it('without nats-server: says so, exit 1, no swtpm and no temporary state left', {
    timeout: 60_000,
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-sim-shards-'));
    try {
      // The PATH without the directory holding nats-server (swtpm stays reachable).
      const path = (process.env.PATH ?? '')
        .split(delimiter)
        .filter((d) => d && !existsSync(join(d, 'nats-server')))
        .join(delimiter);
      const child = spawn(process.execPath, [cli, 'run', '--households', '6', '--shards', '3'], {
        env: { ...process.env, PATH: path, TMPDIR: dir, TRE_MEMORY_TMPDIR: dir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let log = '';
      child.stderr.on('data', (d) => {
        log += d;
      });
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code, log).toBe(1);
      expect(log).toMatch(/shard s3: making its TLS and data keys/); // every shard's swtpm was running
      expect(log).toMatch(/tre-sim: nats-server not found; install it with scripts\/setup\.sh/);
      expect(await processesUnder(dir)).toEqual([]);
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
