/**
 * `tre start` as a child process, stopped by SIGTERM and sent SIGTERM again (and SIGINT) while its
 * clean stop is held open: the repeats are logged once and ignored, and it still finishes the stop
 * (store closed, no WAL left) and exits 0. The stop is held by a TCP connection that never starts its
 * TLS handshake: closing the broker waits for it (up to the handshake timeout), so the repeat lands
 * in the middle of the stop, not after it.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALREADY_STOPPING } from '@tre/hardware';
import { CertificateAuthority, HouseholdRegistry } from '@tre/tre-broker';
import { afterAll, describe, expect, it } from 'vitest';
import { developmentStore } from './support/flow-context.js';
import { spawnTre } from './support/tre-process.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `test`; fails at once if the child ends first (the old `process.once` let a repeat kill it). */
async function until(child: ChildProcess, what: string, test: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!test()) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`tre exited (${child.exitCode ?? child.signalCode}) before ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const messages = (log: string) =>
  log
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => (JSON.parse(l) as { msg: string }).msg);

describe('tre start and repeated stop signals', () => {
  it('ignores a second SIGTERM (and a SIGINT) during its clean stop, logs it once, and still exits 0 with its store closed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-stop-signals-'));
    dirs.push(dir);
    const pki = join(dir, 'pki');
    const data = join(dir, 'data');
    const { ca } = await CertificateAuthority.initForDevelopment(pki);
    await ca.issue('meter', 'm1');
    const store = await developmentStore(data);
    await new HouseholdRegistry(store).upsert([
      { meterId: 'm1', supplierId: 's1', dnoId: 'd1', capacityW: 10_000, account: 'a1' },
    ]);
    store.close();

    const tre = await spawnTre(pki, data);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      tre.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    // A connection that never says ClientHello: the broker's close waits for it.
    const holder: Socket = connect(tre.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => holder.once('connect', resolve).once('error', reject));
    holder.on('error', () => {});
    try {
      tre.child.kill('SIGTERM');
      await until(tre.child, 'the "stopping" line', () => messages(tre.log()).includes('stopping'));
      expect(existsSync(join(data, 'tre.sqlite-wal'))).toBe(true); // the store is still open
      tre.child.kill('SIGTERM');
      const repeat = `SIGTERM again: ${ALREADY_STOPPING}`;
      await until(tre.child, 'the repeat logged', () => messages(tre.log()).includes(repeat));
      tre.child.kill('SIGINT');
      await sleep(300);
      expect(tre.child.exitCode).toBeNull();
      expect(tre.child.signalCode).toBeNull();
      expect(messages(tre.log())).not.toContain('TRE stopped');
    } finally {
      holder.destroy(); // lets the stop go on
    }
    expect(await exited).toEqual({ code: 0, signal: null });
    const said = messages(tre.log());
    expect(said.filter((m) => m.includes(ALREADY_STOPPING))).toHaveLength(1);
    expect(said.slice(said.indexOf('stopping'))).toContain('TRE stopped');
    expect(said).not.toContain('unclean stop');
    // Closed cleanly: the WAL checkpointed and removed, and the store opens and reads.
    expect(existsSync(join(data, 'tre.sqlite-wal'))).toBe(false);
    const again = await developmentStore(data);
    try {
      expect(new HouseholdRegistry(again).get('m1')?.account).toBe('a1');
    } finally {
      again.close();
    }
  });
});
