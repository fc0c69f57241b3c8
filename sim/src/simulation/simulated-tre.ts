/**
 * The simulation's TRE: in-process, real mTLS MQTT and SQLite, on the simulated clock; with a
 * software TPM (the same code path as a TPM HAT) it measures itself, the regulator certifies its
 * attestation key and whitelists this build, and every agent attests it before sending anything.
 * A cluster of shards is started by `simulated-cluster.ts` with the same TRE options.
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
import type { AttestationPolicy, ManualClock } from '@tre/protocol';
import {
  attestationPolicyFor,
  CertificateAuthority,
  createLogger,
  endorseAk,
  type IssuedFiles,
  type NatsCluster,
  provisionTre,
  type RunningTre,
  startTre,
  type TreOptions,
  type Validity,
} from '@tre/tre-broker';

/** What the simulated TRE measures as its configuration (and the regulator whitelists). */
const SIMULATION_TRE_CONFIG = { simulation: true };

/** One TRE of the simulation: the single TRE (named `tre`) or one shard of a cluster. */
export interface SimulatedShard {
  name: string;
  tre: RunningTre;
  swtpm: Swtpm | undefined;
  /** Where its households and parties connect. */
  url: string;
}

/** The regulator's PKI and the TREs it certified, as started. */
export interface SimulatedTres {
  ca: CertificateAuthority;
  /** One TRE, or the shards s1..sN of a cluster. */
  shards: SimulatedShard[];
  /** The regulator's own client certificate (in a cluster also the NATS admin, `adminUser('reg')`). */
  regulatorFiles: IssuedFiles;
  /** The regulator-signed whitelist (JWS) every TRE satisfies, when they are attested. */
  whitelist: { jws: string; policy: AttestationPolicy } | undefined;
  /** The shards' NATS cluster; undefined for a single TRE. */
  nats: NatsCluster | undefined;
  /** Stops every TRE, then the software TPMs and NATS. */
  stop(): Promise<void>;
}

/** The TRE options the simulation uses, for the TRE (or shard) `treId` in `base`. */
export function simulatedTreOptions(o: {
  base: string;
  treId: string;
  ca: CertificateAuthority;
  clock: ManualClock;
  swtpm: Swtpm | undefined;
  households: number;
  config: Record<string, unknown>;
  logLevel?: string;
}): TreOptions {
  const { ca, swtpm } = o;
  return {
    pkiDir: join(o.base, 'tre-pki'),
    dataDir: join(o.base, 'tre-data'),
    port: 0,
    clock: o.clock,
    log: createLogger({ level: o.logLevel ?? 'warn' }),
    limits: { connectionsPerIdentity: 4, messagesPerSecond: 10_000, burst: 100_000 },
    // Feeders of 50 households (or a quarter of a small simulation) are the DNO's groups.
    monitoring: {
      minGroupSize: Math.max(2, Math.min(50, Math.floor(o.households / 4))),
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
              endorseAk(tpm, ca, o.treId, { allowUncertifiedEk: true, validity: simulatedValidity(o.clock) }),
          },
          measuredConfig: o.config,
        }
      : {}),
  };
}

/**
 * Valid from a day before the simulated start (or now, if earlier) for ten years: agents and other
 * shards check the TRE's certificates against simulated time.
 */
function simulatedValidity(clock: ManualClock): Validity {
  return { notBefore: new Date(Math.min(clock.now(), Date.now()) - 86_400_000), days: 3650 };
}

/** The TRE's keys made on its side (sealed to its measurement with the TPM) and its certificate. */
export function provisionSimulatedTre(
  ca: CertificateAuthority,
  clock: ManualClock,
  o: { base: string; treId: string; swtpm: Swtpm | undefined; config: Record<string, unknown> },
): Promise<void> {
  return provisionTre(ca, {
    validity: simulatedValidity(clock),
    tcti: o.swtpm?.tcti,
    dataDir: join(o.base, 'tre-data'),
    pkiDir: join(o.base, 'tre-pki'),
    treId: o.treId,
    hosts: [],
    config: o.config,
    bootPcrs: [],
    force: true,
  });
}

/**
 * The regulator's whitelist of this build and configuration, signed and read back as a verifier
 * does. Measured in this process: call it once the TPM stack is loaded (after provisioning), as
 * the TREs' own measurements will see it.
 */
export async function signedWhitelist(
  ca: CertificateAuthority,
  config: Record<string, unknown>,
  clock: ManualClock,
  policyId: string,
): Promise<{ jws: string; policy: AttestationPolicy }> {
  const jws = await ca.signAsRegulator(
    'attestationPolicy',
    attestationPolicyFor(config, { policyId, issuedAt: new Date(clock.now()) }),
  );
  return { jws, policy: await loadAttestationPolicy(jws, await readFile(ca.paths.caCert, 'utf8')) };
}

/** The regulator's PKI, the software TPM (unless `attestation` is false or swtpm is missing) and the TRE. */
export async function startSimulatedTre(
  dir: string,
  clock: ManualClock,
  opts: { households: number; attestation?: boolean; logLevel?: string },
  progress: (line: string) => void,
): Promise<SimulatedTres> {
  progress('regulator: creating the PKI');
  // The regulator's directory (ca.key, the parties' certificates) and the TRE's (its certificate,
  // the root, the CRL) are separate, as on two machines; the TRE's key is made on its side.
  const { ca } = await CertificateAuthority.init(join(dir, 'pki'), { force: true });
  const regulatorFiles = await ca.issue('regulator', 'reg', { force: true });
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
  const shard = { base: dir, treId: 'tre', swtpm, config: SIMULATION_TRE_CONFIG };
  let tre: RunningTre | undefined;
  const stop = async () => {
    await tre?.stop();
    await swtpm?.stop();
  };
  try {
    await provisionSimulatedTre(ca, clock, shard);
    tre = await startTre(
      simulatedTreOptions({ ...shard, ca, clock, households: opts.households, logLevel: opts.logLevel }),
    );
    return {
      ca,
      shards: [{ name: 'tre', tre, swtpm, url: `mqtts://127.0.0.1:${tre.port}` }],
      regulatorFiles,
      // Made now that the TRE runs: this process maps what the TRE maps (the TPM stack).
      whitelist: tre.attestation
        ? await signedWhitelist(ca, SIMULATION_TRE_CONFIG, clock, 'simulation')
        : undefined,
      nats: undefined,
      stop,
    };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}

/** With the TPM: the agents' TPM-quote attestor against the regulator's whitelist of the TREs. */
export async function householdAttestor(
  { shards, ca, whitelist }: SimulatedTres,
  clock: ManualClock,
  caPem: string,
): Promise<{ attestor: TreAttestor; mode: string }> {
  const attestation = shards[0]?.tre.attestation;
  if (!attestation || !whitelist)
    return {
      attestor: trustWithoutAttestation,
      mode: 'agents connect without TPM attestation (development mode)',
    };
  const cluster =
    shards.length > 1
      ? `; ${shards.length} shards (${shards.map((s) => s.name).join(', ')}) attest each other before sending each other anything over NATS`
      : '';
  return {
    attestor: tpmQuoteAttestor({
      regulatorRootPem: caPem,
      // The regulator's CRL as published now (the AK certificate is checked against it).
      regulatorCrlPem: () => readFile(ca.paths.crl, 'utf8'),
      policy: whitelist.policy,
      clock,
      timeoutMs: 365 * 86_400_000,
    }),
    mode: `agents verify a TPM quote (swtpm) against the regulator's whitelist before sending; PCR 23 ${attestation.pcr.slice(0, 16)}…${cluster}`,
  };
}
