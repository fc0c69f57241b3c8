/**
 * Disk full on the data directory (a small tmpfs, as root): new readings are refused with
 * STORAGE_UNAVAILABLE and not acknowledged (no PUBACK: the connection closes), every reading that
 * was accepted (a PUBACK with no refusal receipt before it) is stored, and the TRE stays up.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, HouseholdRegistry } from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';
import { developmentStore } from './support/flow-context.js';
import { connectWith } from './support/tre-fixture.js';
import { spawnTre } from './support/tre-process.js';

const isRoot = process.getuid?.() === 0;
let mounted: string | undefined;
const dirs: string[] = [];
afterAll(async () => {
  if (mounted) execFileSync('umount', ['-l', mounted]);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe.skipIf(!isRoot)('disk full (needs root to mount a tmpfs; CI runs as root)', () => {
  it('refuses instead of acknowledging, keeps every acknowledged reading, stays up', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-diskfull-'));
    dirs.push(dir);
    const data = join(dir, 'data');
    execFileSync('mkdir', ['-p', data]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', data]);
    mounted = data;
    const pki = join(dir, 'pki');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    const files = await ca.issue('meter', 'f1');
    const store = await developmentStore(data);
    await new HouseholdRegistry(store).upsert([
      { meterId: 'f1', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'a1' },
    ]);
    store.close();
    const tre = await spawnTre(pki, data);
    const url = `mqtts://127.0.0.1:${tre.port}`;
    // Fill the disk, leaving a little room.
    const free = Number(execFileSync('df', ['--output=avail', '-B1', data]).toString().split('\n')[1]);
    await writeFile(join(data, 'filler'), Buffer.alloc(Math.max(0, free - 96 * 1024)));

    const acked: number[] = [];
    const refusals: string[] = [];
    const refusedIds = new Set<string>();
    let closes = 0;
    const base = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 3000 && refusals.length === 0; ) {
      const client = await connectWith(url, files);
      client.on('message', (_t, p) => {
        const r = JSON.parse(p.toString()) as { status: string; reason?: string; requestId: string };
        if (r.status === 'refused') {
          refusals.push(r.reason ?? '');
          refusedIds.add(r.requestId);
        }
      });
      await client.subscribeAsync('tre/v1/meter/f1/inbox/receipt', { qos: 1 });
      for (; i < 3000; i++) {
        const body = {
          v: 1,
          requestId: `r${i}`,
          intervalStart: new Date(base + i * 900_000).toISOString(),
          intervalMinutes: 15,
          energyWh: 100,
          registerWh: 100 * (i + 1),
        };
        const ok = await new Promise<boolean>((resolve) => {
          client.once('close', () => resolve(false));
          client.publish('tre/v1/meter/f1/reading', JSON.stringify(body), { qos: 1 }, (err) => resolve(!err));
        });
        if (!ok) {
          closes++;
          break;
        }
        // A refusal receipt comes before the PUBACK: a PUBACK after one is not an acceptance.
        if (!refusedIds.has(body.requestId)) acked.push(base + i * 900_000);
      }
      await new Promise((r) => setTimeout(r, 200));
      client.end(true);
    }
    console.log(
      `disk full: ${acked.length} readings acknowledged, then refusals: ${refusals.join(',')}, connections closed without PUBACK: ${closes}`,
    );
    expect(refusals).toContain('STORAGE_UNAVAILABLE');
    expect(closes).toBeGreaterThan(0);
    expect(tre.child.exitCode).toBeNull(); // still up
    await tre.stop();
    execFileSync('rm', ['-f', join(data, 'filler')]);
    const after = await developmentStore(data);
    const has = after.db.prepare("SELECT 1 FROM readings WHERE meter_id = 'f1' AND interval_start = ?");
    const lost = acked.filter((t) => !has.get(t));
    after.close();
    expect(lost).toEqual([]);
  });
});
