/**
 * `connections`: concurrent mutual-TLS meter sessions held by one broker process, handshakes per
 * second and resident memory per session; the same load against mosquitto (same PKI) in the same
 * run. The load generators are separate processes (each holds its share of sockets), so the broker
 * process only pays for its own side; counts stay below the 20,000 open-file limit per process.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CertificateAuthority, registerHouseholds } from '@tre/tre-broker';
import { summariseProfile } from './cpu-profile.js';
import { heapOwners } from './heap-owners.js';
import { freePort, spawnTre } from './load.js';
import { meterCertificates } from './meter-certificates.js';
import { startMosquitto } from './mosquitto.js';
import { type BenchResult, procStatusKiB } from './report.js';

const worker = fileURLToPath(new URL('./connection-worker.js', import.meta.url));

export interface ConnectionsOptions {
  sessions: number;
  generators: number;
  /** Idle sessions for the memory split (heap snapshots of a TRE of its own); 0 skips it. */
  splitSessions: number;
}

/** Resident KiB of a process by kind of mapping: the malloc heap, other anonymous memory (V8's heap among it), files. */
async function residentKiB(pid: number): Promise<{ malloc: number; anonymous: number; total: number }> {
  const r = { malloc: 0, anonymous: 0, total: 0 };
  let kind: 'malloc' | 'anonymous' | 'file' = 'file';
  for (const line of (await readFile(`/proc/${pid}/smaps`, 'utf8')).split('\n')) {
    const map = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (map) kind = map[1] === '[heap]' ? 'malloc' : map[1]!.startsWith('/') ? 'file' : 'anonymous';
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) {
      r.total += Number(rss[1]);
      if (kind !== 'file') r[kind] += Number(rss[1]);
    }
  }
  return r;
}

/** Writes a heap snapshot of `pid` (started with --heapsnapshot-signal=SIGUSR2) into `dir`; resolves with its path once written. */
async function heapSnapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(await readdir(dir));
  process.kill(pid, 'SIGUSR2');
  for (const until = Date.now() + 120_000; Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 200));
    const file = (await readdir(dir)).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) continue;
    const path = join(dir, file);
    // Written while the process holds it open (its event loop stopped meanwhile).
    const open = await Promise.all(
      (await readdir(`/proc/${pid}/fd`)).map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')),
    );
    if (!open.includes(path) && (await stat(path)).size > 0) return path;
  }
  throw new Error('the TRE wrote no heap snapshot within 2 minutes');
}

async function hold(
  dir: string,
  port: number,
  ca: string,
  sessions: { key: string; cert: string; clientId: string }[],
  generators: number,
) {
  const share = Math.ceil(sessions.length / generators);
  const children: ChildProcess[] = [];
  for (let g = 0; g < generators; g++) {
    const file = join(dir, `job-${port}-${g}.json`);
    await writeFile(
      file,
      JSON.stringify({ port, ca, concurrency: 64, sessions: sessions.slice(g * share, (g + 1) * share) }),
    );
    children.push(fork(worker, [file], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  }
  const start = performance.now();
  const reports = await Promise.all(
    children.map(
      (c) =>
        new Promise<{ connected: number; failed: number }>((resolve) =>
          c.once('message', (m) => resolve(m as { connected: number; failed: number })),
        ),
    ),
  );
  const seconds = (performance.now() - start) / 1000;
  return {
    connected: reports.reduce((a, r) => a + r.connected, 0),
    failed: reports.reduce((a, r) => a + r.failed, 0),
    seconds,
    release: async () => {
      await Promise.all(
        children.map(
          (c) =>
            new Promise((resolve) => {
              c.once('exit', resolve);
              c.send('stop');
            }),
        ),
      );
    },
  };
}

export async function runConnections(
  opts: ConnectionsOptions,
  progress: (line: string) => void = () => {},
): Promise<BenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-conn-'));
  try {
    const pki = join(dir, 'pki');
    const { tre } = await CertificateAuthority.initForDevelopment(pki);
    progress(`issuing ${opts.sessions} meter certificates`);
    const { keyPem, certs } = await meterCertificates(pki, opts.sessions);
    await registerHouseholds(
      join(dir, 'data'),
      certs.map((_, i) => ({
        meterId: `c${i}`,
        supplierId: 's1',
        dnoId: 'd1',
        capacityW: 10_000,
        account: `a${i}`,
      })),
    );
    const ca = await readFile(tre.ca, 'utf8');
    const sessions = certs.map((cert, i) => ({ key: keyPem, cert, clientId: `c${i}` }));
    const rows: (string | number)[][] = [];

    /** Resident memory by kind of mapping while the TRE held its sessions (filled by `measure`). */
    let treResident: { malloc: number; anonymous: number; total: number; sessions: number } | undefined;
    const measure = async (name: string, pid: number, port: number) => {
      const before = procStatusKiB(pid, 'VmRSS');
      const mapsBefore = await residentKiB(pid);
      const held = await hold(dir, port, ca, sessions, opts.generators);
      await new Promise((r) => setTimeout(r, 1000));
      const after = procStatusKiB(pid, 'VmRSS');
      const mapsAfter = await residentKiB(pid);
      if (name.startsWith('TRE'))
        treResident = {
          malloc: mapsAfter.malloc - mapsBefore.malloc,
          anonymous: mapsAfter.anonymous - mapsBefore.anonymous,
          total: mapsAfter.total - mapsBefore.total,
          sessions: Math.max(1, held.connected),
        };
      rows.push([
        name,
        held.connected,
        held.failed,
        held.connected / held.seconds,
        Math.round(before / 1024),
        Math.round(after / 1024),
        ((after - before) * 1024) / Math.max(1, held.connected) / 1024,
      ]);
      await held.release();
    };

    /**
     * Where an idle session's memory goes: a TRE of its own holds `list.length - 1` sessions after
     * a first one came and went (one-off allocations: mqtt-packet's 65,536 cached number buffers,
     * code), heap snapshots before and after attribute the live JS heap to the aedes client and the
     * TLS socket (bytes freed if their instances went), and /proc/<pid>/smaps splits the rest.
     */
    const memorySplit = async (list: typeof sessions) => {
      progress(`TRE memory split: ${list.length - 1} idle sessions, heap snapshots`);
      const snapshots = join(dir, 'snapshots');
      await mkdir(snapshots);
      const port = await freePort();
      const proc = await spawnTre(pki, join(dir, 'data'), port, undefined, {
        execArgv: ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshots}`],
      });
      try {
        const pid = proc.child.pid!;
        await (await hold(dir, port, ca, list.slice(0, 1), 1)).release();
        await new Promise((r) => setTimeout(r, 1000));
        const before = heapOwners(await heapSnapshot(pid, snapshots), { none: [] });
        const held = await hold(dir, port, ca, list.slice(1), 1);
        await new Promise((r) => setTimeout(r, 1000));
        const owners = {
          'aedes client (MQTT parser, queues, closures)': ['Client'],
          'TLS socket (streams, TLSWrap handle)': ['TLSSocket'],
        };
        const after = heapOwners(await heapSnapshot(pid, snapshots), owners);
        await held.release();
        const n = Math.max(1, held.connected);
        const live = (after.totalBytes - before.totalBytes) / 1024 / n;
        const owned = Object.entries(after.owners).map(
          ([name, o]) => [name, o.retainedBytes / 1024 / n] as const,
        );
        const rest = live - owned.reduce((a, [, v]) => a + v, 0);
        return `live JS heap per idle session of the TRE (heap snapshots, ${n} sessions): ${live.toFixed(1)} KiB = ${owned.map(([name, v]) => `${name} ${v.toFixed(1)}`).join(' + ')} + the rest (the TRE's identity and topic maps, timers, tables shared by all) ${rest.toFixed(1)}`;
      } finally {
        await proc.stop();
      }
    };

    progress('TRE');
    const trePort = await freePort();
    const profileDir = join(dir, 'profile');
    const treProc = await spawnTre(pki, join(dir, 'data'), trePort, profileDir);
    await measure('TRE (aedes, node:tls)', treProc.child.pid!, trePort);
    await treProc.stop();
    const profileFile = (await readdir(profileDir)).find((f) => f.endsWith('.cpuprofile'));
    const profile = profileFile ? summariseProfile(join(profileDir, profileFile)) : [];

    const split =
      opts.splitSessions > 0 ? [await memorySplit(sessions.slice(0, opts.splitSessions + 1))] : [];
    const r = treResident;
    const resident = r
      ? [
          `resident memory per session of the TRE (/proc/<pid>/smaps, ${r.sessions} sessions): ${(r.total / r.sessions).toFixed(1)} KiB = malloc heap ${(r.malloc / r.sessions).toFixed(1)} (OpenSSL's per-connection state, Node's TLSWrap and BIO buffers, libuv) + other anonymous ${(r.anonymous / r.sessions).toFixed(1)} (V8's heap, mmapped buffers) + files ${((r.total - r.malloc - r.anonymous) / r.sessions).toFixed(1)}`,
        ]
      : [];

    progress('mosquitto');
    const mqPort = await freePort();
    const mosquitto = await startMosquitto(dir, tre, mqPort);
    await measure('mosquitto (baseline)', mosquitto.process.pid!, mqPort);
    await mosquitto.stop();

    const [t, m] = rows;
    return {
      name: 'connections',
      description: `${opts.sessions} concurrent mTLS MQTT sessions from ${opts.generators} load-generator processes`,
      columns: [
        'broker',
        'held',
        'failed',
        'handshakes/s',
        'RSS before MiB',
        'RSS after MiB',
        'KiB per session',
      ],
      rows,
      notes:
        t && m
          ? [
              `ratio TRE / mosquitto: handshakes/s ${(Number(t[3]) / Number(m[3])).toFixed(2)}, memory per session ${(Number(t[6]) / Number(m[6])).toFixed(2)}`,
              `TRE CPU profile (self time, whole run incl. start-up): ${profile.map((p) => `${p.component} ${(100 * p.share).toFixed(0)} %`).join(', ')}`,
              ...resident,
              ...split,
            ]
          : [],
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
