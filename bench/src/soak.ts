/**
 * Soak: the full simulation (TRE, meter agents on swtpm attestation, parties) for many simulated
 * days, sampling per simulated day the resident memory, the live JS heap after a full GC and the
 * open handles, and at two days a heap snapshot split by owner (TRE, agents, simulator), so growth
 * can be attributed. Baseline: the simulator's own ground truth (one entry per household interval),
 * which grows by design and is reported beside the TRE's share.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Simulation } from '@tre/sim';
import { heapOwners } from './heap-owners.js';
import { type BenchResult, procStatusKiB } from './report.js';

const OWNERS = {
  TRE: [
    'TlsMqttBroker',
    'Aedes',
    'MessageRouter',
    'Store',
    'HouseholdRegistry',
    'ReadingIngest',
    'MonitoringService',
    'BillingService',
    'DemandResponseService',
    'AttestationService',
  ],
  'meter agents': ['HouseholdAgent', 'TreLink', 'Outbox'],
  'simulator (ground truth, parties)': ['SimulatedHousehold', 'Supplier', 'Dno', 'Dsm'],
};

const MiB = 2 ** 20;

export async function runSoak(
  o: { households: number; days: number; speed: number },
  progress: (line: string) => void,
): Promise<BenchResult> {
  if (o.days < 3) throw new Error('--days must be at least 3 (a warm-up day, then two snapshots apart)');
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const snapshotDays = [2, o.days];
  const dir = await mkdtemp(join(tmpdir(), 'bench-soak-'));
  const sim = await Simulation.create({ households: o.households, days: o.days, speed: o.speed, progress });
  const start = sim.clock.now();
  const rows: (string | number)[][] = [];
  const snapshots: { day: number; file: string }[] = [];
  let lastDay = 0;
  const sample = (day: number) => {
    gc();
    const m = process.memoryUsage();
    const handles = process.getActiveResourcesInfo().length;
    // Resident memory split: anonymous (malloc, V8 heap) and file-backed (code, SQLite's mmapped WAL index).
    const [anon, file] = ['RssAnon', 'RssFile'].map((f) => Math.round(procStatusKiB('self', f) / 1024));
    rows.push([
      day,
      Math.round(m.rss / MiB),
      anon,
      file,
      Math.round(m.heapUsed / MiB),
      Math.round(m.external / MiB),
      handles,
    ]);
    progress(
      `day ${day}: RSS ${Math.round(m.rss / MiB)} MiB, live heap ${Math.round(m.heapUsed / MiB)} MiB, ${handles} handles`,
    );
    if (snapshotDays.includes(day))
      snapshots.push({ day, file: writeHeapSnapshot(join(dir, `day-${day}.heapsnapshot`)) });
  };
  try {
    const summary = await sim.run((t) => {
      const day = Math.floor((t - 1 - start) / 86_400_000);
      if (day > lastDay) sample(day);
      lastDay = Math.max(lastDay, day);
    });
    sample(o.days);
    const broken = summary.invariants.filter((i) => !i.holds).map((i) => i.name);
    const owned = snapshots.map((s) => ({ day: s.day, ...heapOwners(s.file, OWNERS) }));
    const [a, b] = [owned[0]!, owned[owned.length - 1]!];
    const perDay = (x: number, y: number) => ((y - x) / MiB / (b.day - a.day)).toFixed(2);
    const notes = [
      `The heap snapshot on day ${a.day} adds a one-off step to RSS (the allocator keeps its buffers); compare the days after it.`,
      `Live heap by owner (retained by dominance, heap snapshots on day ${a.day} and day ${b.day}):`,
      ...Object.keys(OWNERS).map(
        (k) =>
          `  ${k}: ${(a.owners[k]!.retainedBytes / MiB).toFixed(1)} -> ${(b.owners[k]!.retainedBytes / MiB).toFixed(1)} MiB (${perDay(a.owners[k]!.retainedBytes, b.owners[k]!.retainedBytes)} MiB/day, ${b.owners[k]!.instances} instances)`,
      ),
      `  whole heap: ${(a.totalBytes / MiB).toFixed(1)} -> ${(b.totalBytes / MiB).toFixed(1)} MiB (${perDay(a.totalBytes, b.totalBytes)} MiB/day)`,
      `${summary.readings.sent.toLocaleString('en-US')} readings, ${summary.wallSeconds.toFixed(0)} s wall; invariants ${broken.length ? `BROKEN: ${broken.join(', ')}` : 'all hold'}`,
    ];
    return {
      name: 'soak',
      description: `${o.households} households x ${o.days} simulated days at up to ${o.speed}x: memory and handles per day (after a full GC)`,
      columns: ['day', 'RSS MiB', 'anon MiB', 'file MiB', 'live heap MiB', 'external MiB', 'active handles'],
      rows,
      notes,
    };
  } finally {
    await sim.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
