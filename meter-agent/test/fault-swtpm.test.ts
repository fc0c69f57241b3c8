/**
 * Fault: the TRE's TPM (swtpm) is killed. Attestation answers "unavailable" instead of hanging or
 * crashing; the agent does not trust the TRE, keeps its data queued and retries; the TRE stays up.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Swtpm, startSwtpm } from '@tre/hardware';
import { attestationPolicySchema, systemClock, topics } from '@tre/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextMessage, startTreFixture, type TreFixture } from '../../tre-broker/test/support/tre-fixture.js';
import { Outbox } from '../src/outbox.js';
import { tpmQuoteAttestor } from '../src/tre-attestor.js';
import { TreLink } from '../src/tre-link.js';

let swtpm: Swtpm;
let fx: TreFixture;
beforeAll(async () => {
  swtpm = await startSwtpm();
  fx = await startTreFixture({ tpmTcti: swtpm.tcti });
});
afterAll(async () => {
  await fx?.close();
  await swtpm?.stop().catch(() => {});
});

describe('TPM killed', () => {
  it('attestation says unavailable; agents hold their data and retry; the TRE stays up', {
    timeout: 30_000,
  }, async () => {
    const c = await fx.connect('meter', 'probe');
    const ok = nextMessage(c, topics.inbox({ role: 'meter', id: 'probe' }, 'attestation'));
    await c.publishAsync(
      topics.attest({ role: 'meter', id: 'probe' }),
      JSON.stringify({ v: 1, requestId: 'before', nonce: randomBytes(32).toString('base64url') }),
      { qos: 1 },
    );
    expect(JSON.parse((await ok).payload.toString())).toMatchObject({ status: 'ok' });

    swtpm.kill();
    await new Promise((r) => setTimeout(r, 200));
    const down = nextMessage(c, topics.inbox({ role: 'meter', id: 'probe' }, 'attestation'));
    await c.publishAsync(
      topics.attest({ role: 'meter', id: 'probe' }),
      JSON.stringify({ v: 1, requestId: 'after', nonce: randomBytes(32).toString('base64url') }),
      { qos: 1 },
    );
    expect(JSON.parse((await down).payload.toString())).toMatchObject({
      requestId: 'after',
      status: 'unavailable',
    });

    const files = await fx.issue('meter', 'holder');
    const ca = await readFile(files.ca, 'utf8');
    const policy = attestationPolicySchema.parse({
      v: 1,
      policyId: 'p',
      issuedAt: new Date().toISOString(),
      requiredPcrs: [23],
      pcrValues: {},
      eventDigests: [],
    });
    const link = new TreLink({
      meterId: 'holder',
      endpoints: [fx.url],
      tls: { key: await readFile(files.key), cert: await readFile(files.cert), ca },
      outbox: new Outbox(join(await mkdtemp(join(tmpdir(), 'holder-')), 'outbox.jsonl')),
      clock: systemClock,
      attestor: tpmQuoteAttestor({
        regulatorRootPem: ca,
        regulatorCrlPem: await readFile(join(fx.pkiDir, 'crl.pem'), 'utf8'),
        policy,
        clock: systemClock,
        timeoutMs: 5_000,
      }),
      backoff: { baseMs: 300, maxMs: 600 },
    });
    const states: string[] = [];
    link.on('state', (s, d) => states.push(`${s}${d ? `: ${d}` : ''}`));
    link.enqueue('reading:0', topics.reading('holder'), {
      v: 1,
      intervalStart: '2026-01-05T00:00:00Z',
      intervalMinutes: 15,
      energyWh: 1,
      registerWh: 1,
    });
    link.start();
    await new Promise((r) => setTimeout(r, 2_500));
    await link.stop();
    const untrusted = states.filter((s) => s.startsWith('untrusted: unavailable'));
    console.log(
      `swtpm killed: ${untrusted.length} attestation attempts answered "unavailable", outbox depth ${link.outboxDepth}`,
    );
    expect(untrusted.length).toBeGreaterThanOrEqual(2); // it retried
    expect(link.outboxDepth).toBe(1); // and kept the reading
    expect(
      (
        fx.tre.store.db.prepare("SELECT count(*) AS n FROM readings WHERE meter_id = 'holder'").get() as {
          n: number;
        }
      ).n,
    ).toBe(0);
    expect((await fx.connect('meter', 'still-up')).connected).toBe(true);
  });
});
