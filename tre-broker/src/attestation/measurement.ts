/**
 * What the TRE measures at start into its application PCR, with an event log: the built code it
 * runs (every file of the workspaces' dist/ it loads, hashed in a stable order), the Node.js
 * binary, and its configuration. The regulator's whitelist (`tre attest-policy`) lists the same
 * digests, computed the same way from the release it approves.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AttestationPolicy, type MeasurementEvent, PROTOCOL_VERSION } from '@tre/protocol';
import { TreConfigError } from '../tre-config-error.js';

/** PCR 23: the application PCR (resettable at locality 0 in the PC Client profile). */
export const APPLICATION_PCR = 23;

/**
 * The boot PCRs a TRE quotes and seals to beside its own: 0-15 (what firmware and boot loader
 * extend), deduplicated and sorted. The one place this range is checked (CLI and core alike).
 */
export function bootPcrsOf(pcrs: readonly number[] = []): number[] {
  for (const p of pcrs)
    if (!Number.isInteger(p) || p < 0 || p > 15)
      throw new TreConfigError(
        `boot PCR ${p}: boot PCRs are 0-15, e.g. 0,1,2,3,4,5,6,7 (PCR ${APPLICATION_PCR} is the TRE's own)`,
      );
  return [...new Set(pcrs)].sort((a, b) => a - b);
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...filesUnder(path));
    else if (name.endsWith('.js')) out.push(path);
  }
  return out;
}

/** Digest of a code bundle: SHA-256 over (relative path, file digest) of every .js file, sorted. */
export function bundleDigest(distDirs: string[]): string {
  const h = createHash('sha256');
  for (const dir of distDirs) {
    for (const file of filesUnder(dir))
      h.update(`${relative(join(dir, '..', '..'), file)}\0${sha256(readFileSync(file))}\n`);
  }
  return h.digest('hex');
}

/** The dist/ directories of the code the TRE runs (its own and the workspaces it imports). */
export function treDistDirs(): string[] {
  const here = fileURLToPath(new URL('..', import.meta.url)); // tre-broker/dist
  const workspaceRoot = join(here, '..', '..');
  return ['tre-broker', 'protocol', 'hardware'].map((w) => join(workspaceRoot, w, 'dist'));
}

export function canonicalConfig(config: Record<string, unknown>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(config).sort(([a], [b]) => a.localeCompare(b))));
}

/** What is measured: the content digests, which the TPM extends (see `measureTre`). */
export function measuredContent(
  config: Record<string, unknown>,
  distDirs = treDistDirs(),
  nodeBinary = process.execPath,
) {
  return [
    { description: 'tre code bundle', contentDigest: bundleDigest(distDirs) },
    { description: 'node binary', contentDigest: sha256(readFileSync(nodeBinary)) },
    { description: 'tre configuration', contentDigest: sha256(canonicalConfig(config)) },
  ];
}

/**
 * The event log: FAPI extends a PCR with SHA-256 of the event data, and the event data is the
 * content digest, so each logged (and whitelisted) digest is SHA-256(content digest).
 */
export function measureTre(
  config: Record<string, unknown>,
  distDirs = treDistDirs(),
  nodeBinary = process.execPath,
): MeasurementEvent[] {
  return measuredContent(config, distDirs, nodeBinary).map((m) => ({
    pcr: APPLICATION_PCR,
    digest: createHash('sha256').update(Buffer.from(m.contentDigest, 'hex')).digest('hex'),
    description: m.description,
  }));
}

/** The PCR value the events produce from a reset PCR (32 zero bytes). */
export function replayPcr(events: MeasurementEvent[]): string {
  return events
    .reduce(
      (acc, e) =>
        createHash('sha256')
          .update(Buffer.concat([acc, Buffer.from(e.digest, 'hex')]))
          .digest(),
      Buffer.alloc(32),
    )
    .toString('hex');
}

/**
 * The regulator's whitelist for a TRE release and configuration (what `tre attest-policy` signs):
 * the application PCR as the measurements replay, their event digests, and any boot PCR values
 * read from a reference device (boot PCRs as `bootPcrsOf` allows).
 */
export function attestationPolicyFor(
  config: Record<string, unknown>,
  opts: { policyId: string; issuedAt?: Date; bootPcrValues?: Record<number, string> },
): AttestationPolicy {
  const events = measureTre(config);
  const boot = Object.entries(opts.bootPcrValues ?? {}).map(([pcr, value]) => [Number(pcr), value] as const);
  bootPcrsOf(boot.map(([pcr]) => pcr));
  return {
    v: PROTOCOL_VERSION,
    policyId: opts.policyId,
    issuedAt: (opts.issuedAt ?? new Date()).toISOString(),
    requiredPcrs: [...boot.map(([pcr]) => pcr), APPLICATION_PCR],
    pcrValues: {
      ...Object.fromEntries(boot.map(([pcr, value]) => [String(pcr), [value]])),
      [String(APPLICATION_PCR)]: [replayPcr(events)],
    },
    eventDigests: events.map(({ description, digest }) => ({ description, digest })),
  };
}
