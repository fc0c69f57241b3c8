/**
 * `attest`: verified attestations per second against a software TPM (swtpm), with nonce batching
 * (one quote signs a Merkle root over many nonces) against one quote per request, and the TPM
 * quote latency. Each attestation is verified by the agent's pure-TypeScript verifier (AK
 * certificate chain, signature, nonce inclusion, TLS binding, PCRs, event log, whitelist).
 * Anchor from the paper: 731 ms per TPM 1.2 quote, about 1.4 attestations per second.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSwtpm, Tpm } from '@tre/hardware';
import { type Evidence, merkleBatch, qualifyingData, tlsKeyHash, verifyAttestation } from '@tre/protocol';
import {
  APPLICATION_PCR,
  attestationPolicyFor,
  CertificateAuthority,
  endorseAk,
  Measurement,
} from '@tre/tre-broker';
import type { BenchResult } from './report.js';
import { percentile } from './report.js';

export async function runAttest(
  batches: number[] = [1, 10, 100, 1_000],
  progress: (l: string) => void = () => {},
): Promise<BenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-attest-'));
  const swtpm = await startSwtpm();
  try {
    const { ca } = await CertificateAuthority.initForDevelopment(join(dir, 'pki'));
    const root = new X509Certificate(await readFile(join(dir, 'pki', 'ca.crt')));
    const treCert = new X509Certificate(await readFile(join(dir, 'pki', 'tre.crt')));
    const tpm = Tpm.open({ tcti: swtpm.tcti, keystoreDir: join(dir, 'tpm') });
    const { events } = Measurement.take(tpm, { bench: true });
    const akCertificate = await endorseAk(tpm, ca, 'tre', { allowUncertifiedEk: true });
    const policy = attestationPolicyFor({ bench: true }, { policyId: 'bench' });
    const keyHash = tlsKeyHash(treCert);
    const regulatorCrl = await readFile(ca.paths.crl, 'utf8');

    progress('quote latency');
    const latencies: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t = performance.now();
      await tpm.quote([APPLICATION_PCR], randomBytes(32));
      latencies.push(performance.now() - t);
    }
    latencies.sort((a, b) => a - b);

    /** Attests `n` verifiers with one quote per `perQuote` nonces; returns verified attestations per second. */
    const attest = async (n: number, perQuote: number) => {
      const start = performance.now();
      let verified = 0;
      for (let done = 0; done < n; done += perQuote) {
        const nonces = Array.from({ length: Math.min(perQuote, n - done) }, () => randomBytes(32));
        const { root: merkleRoot, proofs } = merkleBatch(nonces);
        const q = await tpm.quote([APPLICATION_PCR], qualifyingData(merkleRoot, keyHash));
        for (const [i, nonce] of nonces.entries()) {
          const p = proofs[i]!;
          const evidence: Evidence = {
            attest: q.attest.toString('base64'),
            signature: q.signature.toString('base64'),
            pcrs: q.pcrs,
            eventLog: events,
            akCertificate,
            tlsKeyHash: keyHash.toString('hex'),
            batch: {
              root: merkleRoot.toString('hex'),
              leafIndex: p.leafIndex,
              leafCount: p.leafCount,
              siblings: p.siblings.map((s) => s.toString('hex')),
            },
          };
          const v = await verifyAttestation({
            nonce,
            evidence,
            regulatorRoot: root,
            regulatorCrl,
            treCertificate: treCert,
            policy,
            now: new Date(),
          });
          if (v.trusted) verified++;
        }
      }
      return { verified, perSecond: verified / ((performance.now() - start) / 1000) };
    };

    const rows: (string | number)[][] = [];
    for (const size of batches) {
      progress(`${size} verifiers`);
      const unbatched = await attest(size, 1);
      const batched = await attest(size, size);
      rows.push([
        size,
        unbatched.perSecond,
        batched.perSecond,
        batched.perSecond / unbatched.perSecond,
        batched.verified === size && unbatched.verified === size ? 'all' : `${batched.verified}/${size}`,
      ]);
    }
    tpm.close();
    return {
      name: 'attest',
      description:
        'verified attestations per second against swtpm: one quote per request vs one quote per batch of nonces (Merkle tree); verification included',
      columns: ['verifiers', 'one quote each /s', 'batched /s', 'ratio', 'verified'],
      rows,
      summary: Object.fromEntries(
        rows.flatMap((r) => [
          [`batchedPerSecondAt${r[0]}`, r[2] as number],
          [`ratioAt${r[0]}`, r[3] as number],
        ]),
      ),
      notes: [
        `TPM quote latency (swtpm, FAPI via koffi): p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms (the paper's TPM 1.2 anchor: 731 ms per quote, ~1.4 attestations/s)`,
        'With batching the TPM cost is one quote per batch; the rest is the verifier (ECDSA verify, AK certificate chain) per attestation.',
      ],
    };
  } finally {
    await swtpm.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
