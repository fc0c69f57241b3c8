/**
 * Attestation against a real software TPM (swtpm, started here on free ports): the TRE measures
 * itself into PCR 23, its AK (certified by the regulator) quotes batched nonces, and the agent's
 * pure-TypeScript verifier decides. A PCR extended behind the TRE's back, an old nonce, another TLS
 * endpoint: each rejected by name. tpm2_checkquote (tpm2-tools) accepts the same quote. Every
 * party (DNO, supplier, DSM, regulator) attests the same way, with `tre-party attest` for its own
 * software; once the regulator revokes the AK certificate, every verifier refuses the TRE.
 */
import { execFile } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Swtpm, startSwtpm } from '@tre/hardware';
import { tpmQuoteAttestor } from '@tre/meter-agent';
import {
  type AttestationPolicy,
  type AttestationResponse,
  attestationPolicySchema,
  systemClock,
  topics,
  verifyAttestation,
  verifyContent,
} from '@tre/protocol';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  APPLICATION_PCR,
  attestationPolicyFor,
  eventOf,
  measuredComponents,
  replayPcr,
} from '../src/attestation/measurement.js';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

const run = promisify(execFile);
let swtpm: Swtpm;
let fx: TreFixture;
let policy: AttestationPolicy;
let policyJws: string;
let root: X509Certificate;
let treCert: X509Certificate;
/** The regulator's CRL as it is now (`ca.revoke*` rewrites it). */
const regulatorCrl = () => readFile(join(fx.pkiDir, 'crl.pem'), 'utf8');

beforeAll(async () => {
  swtpm = await startSwtpm();
  fx = await startTreFixture({ tpmTcti: swtpm.tcti });
  root = new X509Certificate(await readFile(join(fx.pkiDir, 'ca.crt')));
  treCert = new X509Certificate(await readFile(join(fx.treDir, 'tre.crt')));
  // The regulator's whitelist for this build and configuration (what `tre attest-policy` signs).
  policyJws = await fx.ca.signAsRegulator(
    'attestationPolicy',
    attestationPolicyFor({ fixture: true }, { policyId: 'test' }),
  );
  policy = await verifyContent('attestationPolicy', policyJws, root.publicKey, attestationPolicySchema);
});
afterAll(async () => {
  await fx?.close();
  await swtpm?.stop();
});

async function attest(meter: string, nonce: Buffer): Promise<AttestationResponse> {
  return (await attestor(meter))(nonce);
}

/** A connected meter, ready to ask: connecting first lets several requests leave at once. */
async function attestor(meter: string): Promise<(nonce: Buffer) => Promise<AttestationResponse>> {
  const c = await fx.connect('meter', meter);
  return (nonce) => request(c, meter, nonce);
}

async function request(c: MqttClient, meter: string, nonce: Buffer): Promise<AttestationResponse> {
  const answer = nextMessage(c, `tre/v1/meter/${meter}/inbox/attestation`);
  await c.publishAsync(
    topics.attest({ role: 'meter', id: meter }),
    JSON.stringify({ v: 1, requestId: `a-${meter}`, nonce: nonce.toString('base64url') }),
    { qos: 1 },
  );
  return JSON.parse((await answer).payload.toString()) as AttestationResponse;
}

const verify = async (nonce: Buffer, r: AttestationResponse, tls = treCert) =>
  verifyAttestation({
    nonce,
    evidence: r.evidence!,
    regulatorRoot: root,
    regulatorCrl: await regulatorCrl(),
    treCertificate: tls,
    policy,
    now: new Date(),
  });

/** A built CLI as a user runs it, with extra environment (e.g. its own TMPDIR). */
const cli = (script: string, args: string[], env: Record<string, string> = {}) =>
  run(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
    env: { ...process.env, ...env },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({
      code: e.code,
      stdout: e.stdout,
      stderr: e.stderr,
    }),
  );
const treParty = (...args: string[]) => cli('../../sim/dist/cli-party.js', args);
const meterAgent = (args: string[], env?: Record<string, string>) =>
  cli('../../meter-agent/dist/cli.js', args, env);

describe('attestation with swtpm', () => {
  it('a measured TRE is trusted; batched requests share one quote', async () => {
    const nonces = Array.from({ length: 10 }, () => randomBytes(32));
    // Connected first (handshakes on a loaded machine can take longer than the batch window),
    // then all ten requests at once.
    const ask = await Promise.all(nonces.map((_, i) => attestor(`at${i}`)));
    const answers = await Promise.all(nonces.map((n, i) => ask[i]!(n)));
    for (const [i, a] of answers.entries()) {
      expect(a.status).toBe('ok');
      expect(await verify(nonces[i]!, a)).toMatchObject({ trusted: true });
    }
    expect(fx.tre.attestation!.service.stats.quotes).toBeLessThan(nonces.length);
    expect(fx.tre.attestation!.pcr).toBe(replayPcr(measuredComponents({ fixture: true }).map(eventOf)));
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

  it('every party attests the TRE with its own nonce on its own topics: DNO, supplier, DSM, regulator', async () => {
    const attestor = tpmQuoteAttestor({
      regulatorRootPem: root.toString(),
      regulatorCrlPem: regulatorCrl,
      policy,
      clock: systemClock,
      timeoutMs: 5_000,
    });
    const roles = ['dno', 'supplier', 'dsm', 'regulator'] as const;
    const verdicts = await Promise.all(
      roles.map(async (role) => {
        const me = { role, id: `${role}-1` };
        const client = await fx.connect(role, me.id);
        await client.subscribeAsync(topics.inbox(me, 'attestation'), { qos: 1 });
        const treCertificate = (client.stream as TLSSocket).getPeerX509Certificate()!;
        return [role, await attestor({ client, treCertificate, me })];
      }),
    );
    expect(Object.fromEntries(verdicts)).toEqual({
      dno: { trusted: true },
      supplier: { trusted: true },
      dsm: { trusted: true },
      regulator: { trusted: true },
    });
  });

  it('`tre-party attest` and `meter-agent attest` print the verdict; the agent needs the CRL and leaves no file behind', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'party-attest-'));
    const policyFile = join(dir, 'policy.jws');
    await writeFile(policyFile, policyJws);
    const dno = await fx.issue('dno', 'grid-1');
    // --crl defaults to crl.pem next to --ca (the regulator's pki/).
    const party = await treParty(
      'attest',
      ...['--role', 'dno', '--id', 'grid-1', '--tre', fx.url],
      ...['--cert', dno.cert, '--key', dno.key, '--ca', dno.ca, '--policy', policyFile],
    );
    expect(party).toMatchObject({ code: 0, stdout: 'trusted\n' });
    const meter = await fx.issue('meter', 'cli-1');
    const args = ['attest', '--tre', fx.url, '--meter', 'cli-1', '--cert', meter.cert, '--key', meter.key];
    const scratch = await mkdtemp(join(tmpdir(), 'agent-tmpdir-'));
    const agent = await meterAgent([...args, '--ca', meter.ca, '--policy', policyFile, '--json'], {
      TMPDIR: scratch,
    });
    expect(agent.code, agent.stderr).toBe(0);
    expect(JSON.parse(agent.stdout)).toEqual({ trusted: true });
    expect(await readdir(scratch)).toEqual([]); // no attest-<pid>.jsonl (or any other file) left
    const noCrl = await meterAgent([
      ...args,
      ...['--ca', meter.ca, '--crl', join(dir, 'crl.pem'), '--policy', policyFile],
    ]);
    expect(noCrl.code).toBe(1);
    expect(noCrl.stderr).toMatch(/cannot read the regulator's CRL at .*crl\.pem \(ENOENT\).*--crl <file>/);
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

  it("once the regulator revokes the TRE's AK certificate, the verifier refuses it by name (the last test: it stays revoked)", async () => {
    const nonce = randomBytes(32);
    const a = await attest('revoked', nonce);
    const serial = new X509Certificate(a.evidence!.akCertificate).serialNumber
      .toLowerCase()
      .replace(/^0+/, '');
    expect(await fx.ca.revokeSerial(serial)).toEqual({ role: 'tre-ak', id: 'tre' });
    expect(await verify(nonce, a)).toEqual({
      trusted: false,
      check: 'ak-certificate',
      reason: `the AK certificate is revoked by the regulator (serial ${serial})`,
    });
    const dir = await mkdtemp(join(tmpdir(), 'party-revoked-'));
    await writeFile(join(dir, 'policy.jws'), policyJws);
    const dsm = await fx.issue('dsm', 'flex-1');
    const refused = await treParty(
      'attest',
      ...['--role', 'dsm', '--id', 'flex-1', '--tre', fx.url, '--cert', dsm.cert, '--key', dsm.key],
      ...['--ca', dsm.ca, '--crl', join(fx.pkiDir, 'crl.pem'), '--policy', join(dir, 'policy.jws')],
    );
    expect(refused).toMatchObject({
      code: 1,
      stdout: `NOT trusted: ak-certificate: the AK certificate is revoked by the regulator (serial ${serial})\n`,
    });
  });
});
