/**
 * The agent sends nothing to a TRE it does not trust: one whose certificate is not from the
 * regulator root it was given, or one that fails attestation (here an attestor that says no; the
 * TPM-quote attestor returns the same verdict shape); and a meter the TRE refuses is told what to
 * check.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock, topics } from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTreFixture, type TreFixture } from '../../tre-broker/test/support/tre-fixture.js';
import { Outbox } from '../src/outbox.js';
import { type TreAttestor, TreLink } from '../src/tre-link.js';

let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture();
});
afterAll(async () => fx?.close());

async function agentWith(meterId: string, ca: Buffer, attestor: TreAttestor, registered = true) {
  const files = await fx.issue('meter', meterId, undefined, registered ? undefined : false);
  const dir = await mkdtemp(join(tmpdir(), 'trust-'));
  const link = new TreLink({
    meterId,
    endpoints: [fx.url],
    tls: { key: await readFile(files.key), cert: await readFile(files.cert), ca },
    outbox: new Outbox(join(dir, 'outbox.jsonl')),
    clock: systemClock,
    attestor,
    backoff: { baseMs: 60_000, maxMs: 60_000 },
  });
  const states: string[] = [];
  link.on('state', (s, d) => states.push(`${s}${d ? `: ${d}` : ''}`));
  link.enqueue('reading:0', topics.reading(meterId), {
    v: 1,
    intervalStart: '2026-01-05T00:00:00Z',
    intervalMinutes: 15,
    energyWh: 1,
    registerWh: 1,
  });
  link.start();
  await new Promise((r) => setTimeout(r, 1_500));
  await link.stop();
  const stored = fx.tre.store.db
    .prepare('SELECT count(*) AS n FROM readings WHERE meter_id = ?')
    .get(meterId) as { n: number };
  return { states, stored: stored.n, depth: link.outboxDepth };
}

describe('trust before sending', () => {
  it('refuses a TRE whose certificate is not from the regulator root', async () => {
    const rogue = await CertificateAuthority.initForDevelopment(
      join(await mkdtemp(join(tmpdir(), 'other-root-')), 'pki'),
    );
    const otherRoot = await readFile(rogue.ca.paths.caCert);
    const attested: string[] = [];
    const r = await agentWith('t1', otherRoot, async () => {
      attested.push('asked');
      return { trusted: true };
    });
    expect(attested).toEqual([]); // never got as far as attestation
    expect(r.states.join('\n')).toMatch(/offline: .*(certificate|self.signed|issuer)/i);
    expect(r).toMatchObject({ stored: 0, depth: 1 });
  });

  it('sends nothing to a TRE that fails attestation, and keeps the data queued', async () => {
    const r = await agentWith('t2', await readFile(join(fx.pkiDir, 'ca.crt')), async () => ({
      trusted: false,
      check: 'whitelist',
      reason: 'PCR 23 not on the whitelist',
    }));
    expect(r.states).toContain('untrusted: whitelist: PCR 23 not on the whitelist');
    expect(r.states).not.toContain('trusted');
    expect(r).toMatchObject({ stored: 0, depth: 1 });
  });

  it('a meter the TRE refuses (not registered) is told what to check, and keeps its data', async () => {
    const r = await agentWith(
      't4',
      await readFile(join(fx.pkiDir, 'ca.crt')),
      async () => ({ trusted: true }),
      false,
    );
    expect(r.states.join('\n')).toMatch(
      /offline: .*Not authorized: the TRE refused this meter \(is it in the regulator's registry, of this TRE's shard/,
    );
    expect(r.states.join('\n')).not.toContain('t4'); // no meter id in what may be logged
    expect(r).toMatchObject({ stored: 0, depth: 1 });
  });

  it('sends once the TRE is trusted', async () => {
    const r = await agentWith('t3', await readFile(join(fx.pkiDir, 'ca.crt')), async () => ({
      trusted: true,
    }));
    expect(r).toMatchObject({ stored: 1, depth: 0 });
  });
});
