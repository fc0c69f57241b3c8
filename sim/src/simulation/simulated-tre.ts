/**
 * The simulation's TRE: in-process, real mTLS MQTT and SQLite, on the simulated clock; with a
 * software TPM (the same code path as a TPM HAT) it measures itself, the regulator certifies its
 * attestation key and whitelists this build, and every agent attests it before sending anything.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Swtpm, startSwtpm, type Tpm } from '@tre/hardware';
import {
  loadAttestationPolicy,
  type TreAttestor,
  tpmQuoteAttestor,
  trustWithoutAttestation,
} from '@tre/meter-agent';
import type { ManualClock } from '@tre/protocol';
import {
  attestationPolicyFor,
  CertificateAuthority,
  createLogger,
  endorseAk,
  provisionTre,
  type RunningTre,
  startTre,
} from '@tre/tre-broker';

/** What the simulated TRE measures as its configuration (and the regulator whitelists). */
const SIMULATION_TRE_CONFIG = { simulation: true };

export interface SimulatedTre {
  tre: RunningTre;
  ca: CertificateAuthority;
  swtpm: Swtpm | undefined;
}

/** The regulator's PKI, the software TPM (unless `attestation` is false or swtpm is missing) and the TRE. */
export async function startSimulatedTre(
  dir: string,
  clock: ManualClock,
  opts: { households: number; attestation?: boolean; logLevel?: string },
  progress: (line: string) => void,
): Promise<SimulatedTre> {
  const start = clock.now();
  progress('regulator: creating the PKI');
  // The regulator's directory (ca.key, the parties' certificates) and the TRE's (its certificate,
  // the root, the CRL) are separate, as on two machines; the TRE's key is made on its side.
  const { ca } = await CertificateAuthority.init(join(dir, 'pki'), { force: true });
  const swtpm =
    opts.attestation === false
      ? undefined
      : await startSwtpm({ dir: join(dir, 'swtpm') }).catch((err: Error) => {
          progress(`no software TPM (${err.message}): agents will connect without attestation`);
          return undefined;
        });
  progress(
    swtpm
      ? 'TRE: making its TLS and data keys, sealed to its measurement (swtpm)'
      : 'TRE: making its TLS key (development, unsealed)',
  );
  await provisionTre(ca, {
    tcti: swtpm?.tcti,
    dataDir: join(dir, 'tre-data'),
    pkiDir: join(dir, 'tre-pki'),
    treId: 'tre',
    hosts: [],
    config: SIMULATION_TRE_CONFIG,
    bootPcrs: [],
    force: true,
  });
  const tre = await startTre({
    pkiDir: join(dir, 'tre-pki'),
    dataDir: join(dir, 'tre-data'),
    port: 0,
    clock,
    log: createLogger({ level: opts.logLevel ?? 'warn' }),
    limits: { connectionsPerIdentity: 4, messagesPerSecond: 10_000, burst: 100_000 },
    // Feeders of 50 households (or a quarter of a small simulation) are the DNO's groups.
    monitoring: {
      minGroupSize: Math.max(2, Math.min(50, Math.floor(opts.households / 4))),
      epsilon: [1, 1],
      dailyBudget: 100,
    },
    // A software TPM (the same code path as a TPM HAT): the TRE measures itself, the regulator
    // certifies its attestation key, and every agent attests the TRE before sending anything.
    ...(swtpm
      ? {
          tpm: {
            tcti: swtpm.tcti,
            akCertificate: (tpm: Tpm) =>
              // Valid from before the simulated start: the agents check it against simulated time.
              endorseAk(tpm, ca, 'tre', {
                allowUncertifiedEk: true,
                validity: { notBefore: new Date(Math.min(start, Date.now()) - 86_400_000), days: 3650 },
              }),
          },
          measuredConfig: SIMULATION_TRE_CONFIG,
        }
      : {}),
  });
  return { tre, ca, swtpm };
}

/** With the TPM: the regulator's whitelist of this TRE build, and the agents' TPM-quote attestor. */
export async function householdAttestor(
  { tre, ca }: SimulatedTre,
  clock: ManualClock,
  caPem: string,
): Promise<{ attestor: TreAttestor; mode: string }> {
  if (!tre.attestation)
    return {
      attestor: trustWithoutAttestation,
      mode: 'agents connect without TPM attestation (development mode)',
    };
  const jws = await ca.signAsRegulator(
    'attestationPolicy',
    attestationPolicyFor(SIMULATION_TRE_CONFIG, { policyId: 'simulation', issuedAt: new Date(clock.now()) }),
  );
  return {
    attestor: tpmQuoteAttestor({
      regulatorRootPem: caPem,
      // The regulator's CRL as published now (the AK certificate is checked against it).
      regulatorCrlPem: () => readFile(ca.paths.crl, 'utf8'),
      policy: await loadAttestationPolicy(jws, caPem),
      clock,
      timeoutMs: 365 * 86_400_000,
    }),
    mode: `agents verify a TPM quote (swtpm) against the regulator's whitelist before sending; PCR 23 ${tre.attestation.pcr.slice(0, 16)}…`,
  };
}
