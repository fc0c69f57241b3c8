/**
 * Store-and-forward through a real TRE process: the TRE stops while the agent keeps reading; after
 * it restarts, every interval arrives exactly once.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock, systemClock, topics } from '@tre/protocol';
import { CertificateAuthority, registerHouseholds } from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';
import { developmentStore } from '../../tre-broker/test/support/flow-context.js';
import { spawnTre } from '../../tre-broker/test/support/tre-process.js';
import { Outbox } from '../src/outbox.js';
import { TreLink, trustWithoutAttestation } from '../src/tre-link.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function until(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('outbox', () => {
  it('survives a reopen, keeps order, dedupes keys and ignores a torn last line', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'outbox-'));
    dirs.push(dir);
    const path = join(dir, 'outbox.jsonl');
    const a = new Outbox(path, 3);
    for (let i = 0; i < 10; i++) a.add({ key: `k${i}`, topic: 't', payload: `${i}` });
    expect(a.add({ key: 'k3', topic: 't', payload: 'again' })).toBe(false);
    for (const k of ['k0', 'k1', 'k2', 'k5']) a.settle(k);
    a.close();
    const { appendFileSync } = await import('node:fs');
    appendFileSync(path, '{"op":"add","key":"torn"');
    const b = new Outbox(path);
    expect(b.entries().map((e) => e.key)).toEqual(['k3', 'k4', 'k6', 'k7', 'k8', 'k9']);
    b.close();
    expect((await readFile(path, 'utf8')).split('\n').filter(Boolean)).toHaveLength(6);
  });
});

describe('store and forward', () => {
  it('loses nothing and duplicates nothing across a TRE outage', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snf-'));
    dirs.push(dir);
    const pki = join(dir, 'pki');
    const data = join(dir, 'data');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    const files = await ca.issue('meter', 'h1');
    await registerHouseholds(data, [
      { meterId: 'h1', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'a1' },
    ]);

    let tre = await spawnTre(pki, data);
    const port = tre.port;
    const outbox = new Outbox(join(dir, 'agent', 'outbox.jsonl'));
    const tls = {
      key: await readFile(files.key),
      cert: await readFile(files.cert),
      ca: await readFile(files.ca),
    };
    const link = new TreLink({
      meterId: 'h1',
      endpoints: [`mqtts://127.0.0.1:${port}`],
      tls,
      outbox,
      clock: systemClock,
      attestor: trustWithoutAttestation,
      backoff: { baseMs: 100, maxMs: 400 },
    });
    const states: string[] = [];
    link.on('state', (s) => states.push(s));
    link.start();
    const base = Date.UTC(2026, 0, 5);
    let register = 0;
    const read = (i: number) => {
      register += 100 + i;
      link.enqueue(`reading:${i}`, topics.reading('h1'), {
        v: 1,
        intervalStart: new Date(base + i * 900_000).toISOString(),
        intervalMinutes: 15,
        energyWh: 100 + i,
        registerWh: register,
      });
    };
    for (let i = 0; i < 10; i++) read(i);
    await until(() => outbox.depth === 0);
    await tre.stop();
    for (let i = 10; i < 30; i++) read(i); // the TRE is down: these wait on disk
    await new Promise((r) => setTimeout(r, 300));
    expect(outbox.depth).toBe(20);
    tre = await spawnTre(pki, data, port);
    await until(() => outbox.depth === 0);
    await link.stop();
    await tre.stop();

    const after = await developmentStore(data);
    const rows = after.db
      .prepare(
        "SELECT interval_start, effective_wh FROM readings WHERE meter_id = 'h1' ORDER BY interval_start",
      )
      .all() as {
      interval_start: number;
      effective_wh: number;
    }[];
    after.close();
    outbox.close();
    expect(rows).toHaveLength(30);
    expect(rows.map((r) => r.effective_wh)).toEqual(Array.from({ length: 30 }, (_, i) => 100 + i));
    expect(states).toContain('offline');
    expect(states.filter((s) => s === 'trusted').length).toBeGreaterThanOrEqual(2);
  });

  it('settles a reading by its PUBACK alone, and drops a refused one with the receipt that came before its PUBACK', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snf-'));
    dirs.push(dir);
    const pki = join(dir, 'pki');
    const data = join(dir, 'data');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    const files = await ca.issue('meter', 'h3');
    await registerHouseholds(data, [
      { meterId: 'h3', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'a3' },
    ]);
    const tre = await spawnTre(pki, data);
    const journal = join(dir, 'agent', 'outbox.jsonl');
    const outbox = new Outbox(journal);
    const link = new TreLink({
      meterId: 'h3',
      endpoints: [`mqtts://127.0.0.1:${tre.port}`],
      tls: { key: await readFile(files.key), cert: await readFile(files.cert), ca: await readFile(files.ca) },
      outbox,
      clock: systemClock,
      attestor: trustWithoutAttestation,
      backoff: { baseMs: 100, maxMs: 400 },
    });
    const answers: { key: string; status: string; reason?: string; family: string }[] = [];
    link.on('receipt', (r, key) =>
      answers.push({ key, status: r.status, reason: r.reason, family: r.family }),
    );
    link.start();
    const base = Date.UTC(2026, 0, 5);
    // Intervals two apart: each is judged on its own energy (10 kW: at most 2,501 Wh a quarter hour).
    const energies = [100, 99_999, 120, 130, 140];
    for (const [i, energyWh] of energies.entries())
      link.enqueue(`reading:${i}`, topics.reading('h3'), {
        v: 1,
        intervalStart: new Date(base + 2 * i * 900_000).toISOString(),
        intervalMinutes: 15,
        energyWh,
        registerWh: 1_000 * (i + 1),
      });
    link.enqueue('reading:0-again', topics.reading('h3'), {
      v: 1,
      intervalStart: new Date(base).toISOString(),
      intervalMinutes: 15,
      energyWh: 100,
      registerWh: 1_000,
    }); // a duplicate of reading:0 (another key, same content): acknowledged as accepted
    await until(() => outbox.depth === 0);
    await link.stop();
    await tre.stop();
    outbox.close();
    expect(answers.sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: 'reading:0', status: 'accepted', reason: undefined, family: 'reading' },
      { key: 'reading:0-again', status: 'accepted', reason: undefined, family: 'reading' },
      { key: 'reading:1', status: 'refused', reason: 'OUT_OF_BOUNDS', family: 'reading' },
      { key: 'reading:2', status: 'accepted', reason: undefined, family: 'reading' },
      { key: 'reading:3', status: 'accepted', reason: undefined, family: 'reading' },
      { key: 'reading:4', status: 'accepted', reason: undefined, family: 'reading' },
    ]);
    const done = (await readFile(journal, 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { op: string; key: string; refused?: string })
      .filter((l) => l.op === 'done');
    expect(done.find((l) => l.key === 'reading:1')).toEqual({
      op: 'done',
      key: 'reading:1',
      refused: 'OUT_OF_BOUNDS',
    });
    expect(done.filter((l) => l.refused)).toHaveLength(1);
    const after = await developmentStore(data);
    const rows = after.db
      .prepare(
        "SELECT status, count(*) AS n FROM readings WHERE meter_id = 'h3' GROUP BY status ORDER BY status",
      )
      .all();
    after.close();
    expect(rows).toEqual([
      { status: 'excluded', n: 1 },
      { status: 'ok', n: 4 },
    ]);
  });

  it('backs off with jitter between failed attempts (fake clock)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snf-'));
    dirs.push(dir);
    const clock = new ManualClock(0);
    const link = new TreLink({
      meterId: 'h2',
      endpoints: ['mqtts://127.0.0.1:1', 'mqtts://127.0.0.1:2'],
      tls: { key: '', cert: '', ca: '' },
      outbox: new Outbox(join(dir, 'o.jsonl')),
      clock,
      attestor: trustWithoutAttestation,
      backoff: { baseMs: 1000, maxMs: 8000 },
    });
    const urls: string[] = [];
    link.on('state', (s, d) => {
      if (s === 'connecting') urls.push(d!);
    });
    link.start();
    for (let i = 0; i < 6; i++) {
      await until(() => link.state === 'offline', 5000);
      clock.advance(8000);
    }
    await link.stop();
    expect(urls.slice(0, 4)).toEqual([
      'mqtts://127.0.0.1:1',
      'mqtts://127.0.0.1:2',
      'mqtts://127.0.0.1:1',
      'mqtts://127.0.0.1:2',
    ]);
  });
});
