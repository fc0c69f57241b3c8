/**
 * `tre cluster` as a user runs it, with real processes (swtpm, nats-server, one `tre start
 * --cluster` per shard): its summary names each shard's MQTT endpoint and each takes an mTLS
 * client; the shards attested each other (a registry update sent to s1 reaches s2, and each meter
 * is admitted by its own shard only); SIGINT stops every process it started; a second run on the
 * same directory starts again with the same CA, and what the first run stored is still there.
 * With `--standbys 1` shard s1 gets a standby s1-b, listed after s1 in its endpoints: a SIGKILL of
 * the primary is reported, and s1-b serves s1 on its own port, with what s1 journaled (the time
 * from the kill to serving is printed, not asserted). `--help` names the failover options.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Household } from '@tre/protocol';
import { CertificateAuthority, type IssuedFiles } from '@tre/tre-broker';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { measuredConfigOf, treSettingsFrom, withTreOptions } from '../src/cli/tre-options.js';
import { formatLogLine, LOG_LEVELS, natsLineLevel, shardConfiguration } from '../src/cluster/dev-cluster.js';
import { tre, treCli } from './support/run-cli.js';
import { connectWith, registerOverMqtt } from './support/tre-fixture.js';

interface Summary {
  /** Every TRE listed: s1, s2 and standbys s1-b, ... */
  shards: Map<string, { url: string; pid: number }>;
  /** With standbys: each shard's endpoints in failover order. */
  endpoints: Map<string, string[]>;
  regulatorDir: string;
  policyFile: string;
}

interface RunningCluster {
  child: ChildProcess;
  summary: Summary;
  output(): string;
  exited: Promise<number | null>;
}

const START_MS = 180_000;

/** `tre cluster --dir <dir> <options> [-- treArgs]` until its summary is printed. */
async function runCluster(
  dir: string,
  treArgs: string[] = [],
  options = ['--shards', '2'],
): Promise<RunningCluster> {
  // Its own process group, so that a failed test can kill whatever it left (afterAll).
  const args = ['cluster', '--dir', dir, ...options, ...(treArgs.length ? ['--', ...treArgs] : [])];
  const child = spawn(process.execPath, [treCli, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  groups.add(child.pid!);
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const summary = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no summary within ${START_MS} ms:\n${stderr}`)),
      START_MS,
    );
    child.stdout!.on('data', (d) => {
      stdout += d;
      if (/--file households\.csv\n/.test(stdout)) {
        clearTimeout(timer);
        resolve(stdout);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`tre cluster exited (${code}) before its summary:\n${stderr}`));
    });
  });
  const shards = new Map(
    [...summary.matchAll(/^ {2}(s\d+(?:-[a-z])?) +(mqtts:\/\/\S+) +pid (\d+)/gm)].map((m) => [
      m[1]!,
      { url: m[2]!, pid: Number(m[3]) },
    ]),
  );
  const endpoints = new Map(
    [
      ...(/^Endpoints per shard.*\n((?: {2}\S+ +\S+\n)+)/m.exec(summary)?.[1] ?? '').matchAll(
        /^ {2}(\S+) +(\S+)$/gm,
      ),
    ].map((m) => [m[1]!, m[2]!.split(',')]),
  );
  return {
    child,
    summary: {
      shards,
      endpoints,
      regulatorDir: /^Regulator PKI: +(\S+)/m.exec(summary)![1]!,
      policyFile: /^Whitelist: +(\S+)/m.exec(summary)![1]!,
    },
    output: () => `${stdout}${stderr}`,
    exited,
  };
}

/** Every process below `pid` (from /proc: pid, parent, name), alive now. */
function descendants(pid: number): { pid: number; name: string }[] {
  const table = readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .flatMap((e) => {
      try {
        // pid (name) state ppid ...; the name may hold spaces and parentheses.
        const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
        const close = stat.lastIndexOf(')');
        const [state, ppid] = stat.slice(close + 2).split(' ');
        return state === 'Z'
          ? []
          : [{ pid: Number(e), ppid: Number(ppid), name: stat.slice(stat.indexOf('(') + 1, close) }];
      } catch {
        return []; // gone meanwhile
      }
    });
  const out: { pid: number; name: string }[] = [];
  const parents = [pid];
  while (parents.length > 0) {
    const parent = parents.pop()!;
    for (const p of table.filter((t) => t.ppid === parent)) {
      out.push({ pid: p.pid, name: p.name });
      parents.push(p.pid);
    }
  }
  return out;
}

function isAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** SIGINT, as Ctrl-C: resolves with the exit code once `tre cluster` has exited. */
async function interrupt(run: RunningCluster): Promise<number | null> {
  run.child.kill('SIGINT');
  return run.exited;
}

/** Whether `files` connects to `url` (a meter not registered there is refused). */
async function connects(url: string, files: IssuedFiles): Promise<boolean> {
  try {
    const client = await connectWith(url, files);
    await client.endAsync(true);
    return true;
  } catch {
    return false;
  }
}

const groups = new Set<number>();
let dir: string;
let first: RunningCluster;
let ca: CertificateAuthority;
let caPem: string;
const meters: Record<string, IssuedFiles> = {};

afterAll(async () => {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

const households: Household[] = [
  { meterId: 'm1', supplierId: 'sup1', dnoId: 'd1', capacityW: 10_000, account: 'acc-m1', shard: 's1' },
  { meterId: 'm2', supplierId: 'sup1', dnoId: 'd1', capacityW: 10_000, account: 'acc-m2', shard: 's2' },
];

describe('tre cluster', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tre-cluster-cli-'));
    first = await runCluster(dir);
    ca = await CertificateAuthority.open(first.summary.regulatorDir);
    caPem = await readFile(ca.paths.caCert, 'utf8');
  }, START_MS + 10_000);

  it('prints each shard with its endpoint, the regulator directory and the whitelist', async () => {
    const { summary } = first;
    expect([...summary.shards.keys()]).toEqual(['s1', 's2']);
    expect(summary.regulatorDir).toBe(join(dir, 'regulator'));
    expect(await readFile(summary.policyFile, 'utf8')).toMatch(/^ey/);
    expect(first.output()).toContain('meterId,supplierId,dnoId,capacityW,account,shard');
    expect(first.output()).toMatch(
      /NATS: +tls:\/\/127\.0\.0\.1:\d+,tls:\/\/127\.0\.0\.1:\d+,tls:\/\/127\.0\.0\.1:\d+/,
    );
  });

  it("each shard's endpoint accepts a party's mutual-TLS client", async () => {
    const dno = await ca.issue('dno', 'd1', { force: true });
    for (const { url } of first.summary.shards.values()) expect(await connects(url, dno)).toBe(true);
  });

  it('a registry update sent to s1 reaches s2: each meter is admitted by its own shard only', async () => {
    const { shards } = first.summary;
    for (const h of households) meters[h.meterId] = await ca.issue('meter', h.meterId, { force: true });
    expect(await connects(shards.get('s2')!.url, meters.m2!)).toBe(false); // not registered yet

    expect(await registerOverMqtt(shards.get('s1')!.url, ca, households)).toMatchObject({
      requestId: 'reg-1',
      status: 'accepted',
    });

    // s1 passes the update on to s2 once it has attested it (over NATS, sealed to s2's attested key).
    await vi.waitFor(async () => expect(await connects(shards.get('s2')!.url, meters.m2!)).toBe(true), {
      timeout: 60_000,
      interval: 500,
    });
    expect(await connects(shards.get('s1')!.url, meters.m2!)).toBe(false);
    expect(await connects(shards.get('s1')!.url, meters.m1!)).toBe(true);
    expect(await connects(shards.get('s2')!.url, meters.m1!)).toBe(false);
  }, 120_000);

  it('SIGINT stops every shard, NATS server and software TPM it started', async () => {
    const started = descendants(first.child.pid!);
    const count = (name: string) => started.filter((p) => p.name === name).length;
    expect({ swtpm: count('swtpm'), nats: count('nats-server') }).toEqual({ swtpm: 2, nats: 3 });
    for (const { pid } of first.summary.shards.values()) expect(started.map((p) => p.pid)).toContain(pid);

    expect(await interrupt(first)).toBe(0);
    expect(started.filter((p) => isAlive(p.pid))).toEqual([]);
    expect(first.output()).toContain('stopped;');
  }, 60_000);

  it(
    'a second run on the same directory starts again with the same CA and keeps what was stored',
    async () => {
      const second = await runCluster(dir);
      try {
        expect(await readFile(join(second.summary.regulatorDir, 'ca.crt'), 'utf8')).toBe(caPem);
        expect(second.output()).toContain('reusing the root CA');
        const { shards } = second.summary;
        // s2's sealed store still holds the household registered in the first run.
        expect(await connects(shards.get('s2')!.url, meters.m2!)).toBe(true);
        expect(await connects(shards.get('s1')!.url, meters.m2!)).toBe(false);
      } finally {
        const started = descendants(second.child.pid!);
        expect(await interrupt(second)).toBe(0);
        expect(started.filter((p) => isAlive(p.pid))).toEqual([]);
      }
    },
    START_MS + 60_000,
  );

  it(
    'with other shard options (another measurement) the build the keys were sealed for re-seals them, and the store stays readable',
    async () => {
      const third = await runCluster(dir, ['--min-group-size', '5']);
      try {
        expect(third.output()).toMatch(/shard s2: the build changed since its keys were sealed/);
        expect(await connects(third.summary.shards.get('s2')!.url, meters.m2!)).toBe(true);
      } finally {
        expect(await interrupt(third)).toBe(0);
      }
    },
    START_MS + 60_000,
  );

  it(
    'with --standbys 1, a SIGKILL of the primary is reported and the standby serves the shard with what it journaled',
    async () => {
      // The same measured options as the run before: the release and s1's keys are reused.
      const run = await runCluster(
        dir,
        ['--min-group-size', '5'],
        ['--shards', '1', '--standbys', '1', '--lease-ttl', '3000'],
      );
      const started = descendants(run.child.pid!);
      try {
        const { shards, endpoints } = run.summary;
        expect([...shards.keys()]).toEqual(['s1', 's1-b']);
        const primary = shards.get('s1')!;
        const standby = shards.get('s1-b')!;
        expect(endpoints.get('s1')).toEqual([primary.url, standby.url]);
        expect(run.output()).toMatch(/^ {2}s1 +mqtts:\S+ +pid \d+ +primary now/m);
        expect(run.output()).toMatch(/standby s1-b of s1: standing by/);
        expect(started.filter((p) => p.name === 'swtpm')).toHaveLength(2);
        const dno = await ca.issue('dno', 'd1', { force: true });
        expect(await connects(standby.url, dno)).toBe(false); // a standby does not listen

        // Registered with the primary, so journaled: the standby follows it.
        const m3: Household = { ...households[0]!, meterId: 'm3', account: 'acc-m3' };
        meters.m3 = await ca.issue('meter', 'm3', { force: true });
        expect(await registerOverMqtt(primary.url, ca, [m3])).toMatchObject({ status: 'accepted' });

        const killedAt = performance.now();
        process.kill(primary.pid, 'SIGKILL');
        await vi.waitFor(async () => expect(await connects(standby.url, meters.m3!)).toBe(true), {
          timeout: 30_000,
          interval: 100,
        });
        const servingMs = performance.now() - killedAt;
        expect(run.output()).toMatch(/s1 primary exited \(killed by a signal\); standby s1-b takes over/);
        await vi.waitFor(() => expect(run.output()).toMatch(/s1: standby s1-b took over, serving on/), {
          timeout: 5_000,
        });
        // A receipt from the new primary: a registry update it accepts.
        const m4: Household = { ...households[0]!, meterId: 'm4', account: 'acc-m4' };
        expect(await registerOverMqtt(standby.url, ca, [m4])).toMatchObject({ status: 'accepted' });
        const took = /s1: standby s1-b took over.*$/m.exec(run.output())![0];
        console.info(
          `tre cluster --standbys 1 (lease TTL 3 s): s1-b served s1 ${Math.round(servingMs)} ms after the SIGKILL of s1 (${took})`,
        );
      } finally {
        expect(await interrupt(run)).toBe(0);
        expect(started.filter((p) => isAlive(p.pid))).toEqual([]);
      }
    },
    START_MS + 60_000,
  );
});

describe("the dev cluster's rules", () => {
  it('`tre cluster --help` names the failover options', async () => {
    const { code, stdout } = await tre('cluster', '--help');
    expect(code).toBe(0);
    expect(stdout).toMatch(/--standbys <k>/);
    expect(stdout).toMatch(/--lease-ttl <ms>/);
    expect(stdout).toMatch(/endpoints in failover order/);
  });

  it('measures what `tre start --cluster` measures, defaults and all, with the options given after --', () => {
    const asStart = (args: string[]) => {
      const command = withTreOptions(new Command()).parse(args, { from: 'user' });
      return measuredConfigOf(treSettingsFrom(command.opts()));
    };
    expect(shardConfiguration([]).config).toEqual(asStart(['--cluster']));
    expect(shardConfiguration([]).config).toMatchObject({ cluster: true });
    expect(shardConfiguration(['--min-group-size', '5']).config).toEqual(
      asStart(['--cluster', '--min-group-size', '5']),
    );
    expect(() => shardConfiguration(['--port', '1'])).toThrow(/measured options of `tre start`/);
  });

  it("shows a shard's JSON log line at the chosen level, and anything else as it is", () => {
    const line = JSON.stringify({
      level: 30,
      time: 1,
      pid: 7,
      name: 'tre',
      msg: 'TRE listening',
      port: 8883,
    });
    expect(formatLogLine('s1', line, LOG_LEVELS.info!)).toBe('[s1] INFO TRE listening port=8883');
    expect(formatLogLine('s1', line, LOG_LEVELS.warn!)).toBeUndefined();
    expect(formatLogLine('s2', 'tre: cannot start', LOG_LEVELS.error!)).toBe('[s2] tre: cannot start');
    expect(natsLineLevel('[1] 2026/01/01 [ERR] route')).toBe(LOG_LEVELS.error);
    expect(natsLineLevel('[1] 2026/01/01 [INF] Server is ready')).toBe(LOG_LEVELS.debug);
  });
});
