/**
 * Measured start: what runs goes into the application PCR before anything is served (one event
 * per component, see measurement.ts), and only then does the TPM release the TRE's sealed secrets
 * (its TLS key and its data key). A TRE whose code, dependencies, Node binary, shared libraries,
 * configuration or boot changed, or a copy of its data directory on another TPM, cannot unseal
 * them and refuses to start. Libraries mapped after start are measured at the next quote
 * (`remeasure`), so a verifier refuses them.
 */
import { join } from 'node:path';
import { Tpm } from '@tre/hardware';
import type { MeasurementEvent } from '@tre/protocol';
import { TreConfigError } from '../tre-config-error.js';
import {
  APPLICATION_PCR,
  eventOf,
  mappedExecutables,
  measuredComponents,
  sharedObjectComponent,
} from './measurement.js';
import { hasSealedSecrets, sealedFiles, type TreSecrets, unsealSecrets } from './sealed-secrets.js';

/** The application PCR as this process extended it, and its event log. */
export class Measurement {
  private constructor(
    private readonly tpm: Tpm,
    readonly events: MeasurementEvent[],
    private readonly seen: Set<string>,
  ) {}

  /** Resets the application PCR (a restart needs no reboot) and extends it with every component. */
  static take(tpm: Tpm, config: Record<string, unknown>): Measurement {
    tpm.pcrReset(APPLICATION_PCR);
    const components = measuredComponents(config);
    const events = components.map(eventOf);
    tpm.pcrExtendDigests(
      APPLICATION_PCR,
      events.map((e) => Buffer.from(e.digest, 'hex')),
    );
    // Every executable mapped now, and every native module (mapped later when first used), is measured.
    const measured = new Set([
      ...mappedExecutables(),
      ...components.flatMap((c) => (c.file ? [c.file] : [])),
    ]);
    return new Measurement(tpm, events, measured);
  }

  /** Extends the PCR with executables mapped since the last look (a library loaded after start). */
  remeasure(): MeasurementEvent[] {
    const fresh = mappedExecutables().filter((file) => !this.seen.has(file));
    if (fresh.length === 0) return [];
    for (const file of fresh) this.seen.add(file);
    // Only the files mapped since are read and hashed.
    const events = fresh.map(sharedObjectComponent).map(eventOf);
    this.tpm.pcrExtendDigests(
      APPLICATION_PCR,
      events.map((e) => Buffer.from(e.digest, 'hex')),
    );
    this.events.push(...events);
    return events;
  }
}

/** Opens the TPM, measures, and unseals the secrets `tre enroll tls` sealed to that measurement. */
export function measuredStart(
  tcti: string,
  dataDir: string,
  config: Record<string, unknown>,
): { tpm: Tpm; measurement: Measurement; secrets: TreSecrets } {
  const tpm = Tpm.open({ tcti, keystoreDir: join(dataDir, 'tpm') });
  try {
    const measurement = Measurement.take(tpm, config);
    tpm.createAk(); // unless it exists (enrolled with `tre enroll request`)
    if (!hasSealedSecrets(dataDir))
      throw new TreConfigError(
        `this TRE is not enrolled: no sealed TLS key at ${sealedFiles(dataDir).tlsKey}. Run \`tre enroll tls --tpm ${tcti} --data ${dataDir}\` with the same options as \`tre start\`, and have the regulator sign its request`,
      );
    let secrets: TreSecrets;
    try {
      secrets = unsealSecrets(tpm, dataDir);
    } catch (err) {
      throw new TreConfigError(
        `this TRE's measurement (code, node_modules, node binary, shared libraries, configuration or boot) differs from the one its keys were sealed to, or this is another TPM than the one it was enrolled on: the TPM does not release the TLS and data keys, so the TRE refuses to start (${(err as Error).message}). For an approved update, run \`tre enroll reseal\` on the old release with the regulator's whitelist naming both releases, then update; \`tre measure\` lists what this start measured.`,
      );
    }
    return { tpm, measurement, secrets };
  } catch (err) {
    tpm.close();
    throw err;
  }
}
