/**
 * Attestation against a real software TPM (swtpm, started here on free ports): the TRE measures
 * itself into PCR 23, its AK (certified by the regulator) quotes batched nonces, and the agent's
 * pure-TypeScript verifier decides. A PCR extended behind the TRE's back, an old nonce, another TLS
 * endpoint: each rejected by name. tpm2_checkquote (tpm2-tools) accepts the same quote.
 */
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm } from '@tre/hardware';
import {
  type AttestationPolicy,
  type AttestationResponse,
  attestationPolicySchema,
  topics,
  verifyAttestation,
  verifyContent,
} from '@tre/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APPLICATION_PCR,
  attestationPolicyFor,
  measureTre,
  replayPcr,
} from '../src/attestation/measurement.js';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

const run = promisify(execFile);
let swtpm: Swtpm;
let fx: TreFixture;
let policy: AttestationPolicy;
let root: X509Certificate;
let treCert: X509Certificate;

beforeAll(async () => {
  swtpm = await startSwtpm();
  fx = await startTreFixture({ tpmTcti: swtpm.tcti });
  root = new X509Certificate(await readFile(join(fx.pkiDir, 'ca.crt')));
  treCert = new X509Certificate(await readFile(join(fx.pkiDir, 'tre.crt')));
  // The regulator's whitelist for this build and configuration (what `tre attest-policy` signs).
  const jws = await fx.ca.signAsRegulator(
    'attestationPolicy',
    attestationPolicyFor({ fixture: true }, { policyId: 'test' }),
  );
  policy = await verifyContent('attestationPolicy', jws, root.publicKey, attestationPolicySchema);
});
afterAll(async () => {
  await fx?.close();
  await swtpm?.stop();
});

async function attest(meter: string, nonce: Buffer): Promise<AttestationResponse> {
  const c = await fx.connect('meter', meter);
  const answer = nextMessage(c, `tre/v1/meter/${meter}/inbox/attestation`);
  await c.publishAsync(
    topics.attest({ role: 'meter', id: meter }),
    JSON.stringify({ v: 1, requestId: `a-${meter}`, nonce: nonce.toString('base64url') }),
    { qos: 1 },
  );
  return JSON.parse((await answer).payload.toString()) as AttestationResponse;
}

const verify = (nonce: Buffer, r: AttestationResponse, tls = treCert) =>
  verifyAttestation({
    nonce,
    evidence: r.evidence!,
    regulatorRoot: root,
    treCertificate: tls,
    policy,
    now: new Date(),
  });

describe('attestation with swtpm', () => {
  it('a measured TRE is trusted; batched requests share one quote', async () => {
    const nonces = Array.from({ length: 10 }, () => randomBytes(32));
    const answers = await Promise.all(nonces.map((n, i) => attest(`at${i}`, n)));
    for (const [i, a] of answers.entries()) {
      expect(a.status).toBe('ok');
      expect(await verify(nonces[i]!, a)).toMatchObject({ trusted: true });
    }
    expect(fx.tre.attestation!.service.stats.quotes).toBeLessThan(nonces.length);
    expect(fx.tre.attestation!.pcr).toBe(replayPcr(measureTre({ fixture: true })));
  });

  it('tpm2_checkquote accepts the same quote', async () => {
    const nonce = randomBytes(32);
    const a = await attest('chk', nonce);
    const dir = await mkdtemp(join(tmpdir(), 'checkquote-'));
    await writeFile(join(dir, 'attest.bin'), Buffer.from(a.evidence!.attest, 'base64'));
    await writeFile(join(dir, 'sig.der'), Buffer.from(a.evidence!.signature, 'base64'));
    await writeFile(join(dir, 'ak.pem'), fx.tre.attestation!.akPublicKeyPem);
    const { createHash } = await import('node:crypto');
    const qd = createHash('sha256')
      .update(
        Buffer.concat([
          Buffer.from(a.evidence!.batch.root, 'hex'),
          Buffer.from(a.evidence!.tlsKeyHash, 'hex'),
        ]),
      )
      .digest('hex');
    const out = await run('tpm2_checkquote', [
      '-u',
      join(dir, 'ak.pem'),
      '-m',
      join(dir, 'attest.bin'),
      '-s',
      join(dir, 'sig.der'),
      '-F',
      'plain',
      '-g',
      'sha256',
      '-q',
      qd,
    ]);
    expect(out.stdout).toMatch(/sig:/);
    expect(await verify(nonce, a)).toMatchObject({ trusted: true });
  });

  it('a replayed quote (old nonce) and a relayed one (other TLS endpoint) are rejected by name', async () => {
    const nonce = randomBytes(32);
    const a = await attest('rr', nonce);
    expect(await verify(randomBytes(32), a)).toMatchObject({ trusted: false, check: 'nonce' });
    await fx.ca.issueServer('tre', [], { force: true });
    const otherEndpoint = new X509Certificate(await readFile(join(fx.pkiDir, 'tre.crt')));
    expect(await verify(nonce, a, otherEndpoint)).toMatchObject({ trusted: false, check: 'tls-binding' });
  });

  it('after the application PCR is extended behind its back (tpm2_pcrextend), the verifier names the event-log check', async () => {
    // Another program on the TRE's machine extends PCR 23 directly: the PCR moves, the TRE's event log does not.
    await run('tpm2_pcrextend', [
      '-T',
      `swtpm:host=127.0.0.1,port=${swtpm.port}`,
      `${APPLICATION_PCR}:sha256=${randomBytes(32).toString('hex')}`,
    ]);
    const nonce = randomBytes(32);
    const a = await attest('pcr', nonce);
    expect(await verify(nonce, a)).toMatchObject({ trusted: false, check: 'event-log' });
  });
});
