/**
 * Measured start: what runs goes into the application PCR before anything is served. On the first
 * start the TLS private key is sealed to that PCR value (and the boot PCRs); on every later start it
 * must unseal, so a TRE whose code, Node binary, configuration or boot changed cannot use its
 * identity and refuses to start.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Tpm } from '@tre/hardware';
import { TreConfigError } from '../tre-config-error.js';
import { APPLICATION_PCR, measuredContent } from './measurement.js';
import { sealTlsKey, unsealTlsKey } from './sealed-tls-key.js';

export function measuredStart(
  tcti: string,
  dataDir: string,
  measuredConfig: Record<string, unknown>,
  plainKey: { pem: string | undefined; path: string },
  bootPcrs: number[],
): { tpm: Tpm; tlsKey: string; sealedNow: boolean } {
  const tpm = Tpm.open({ tcti, keystoreDir: join(dataDir, 'tpm') });
  // The application PCR starts from zero on every start (a restart needs no reboot); the boot PCRs
  // cannot be reset by software and carry what booted.
  tpm.pcrReset(APPLICATION_PCR);
  for (const m of measuredContent(measuredConfig))
    tpm.pcrExtend(APPLICATION_PCR, Buffer.from(m.contentDigest, 'hex'), m.description);
  tpm.createAk();
  const sealedFile = join(dataDir, 'tpm', 'tls-key.enc');
  if (!existsSync(sealedFile)) {
    if (!plainKey.pem) {
      tpm.close();
      throw new TreConfigError(
        `no TLS key: ${plainKey.path} is missing and none is sealed in ${sealedFile}; put the TRE key there for the first start`,
      );
    }
    sealTlsKey(tpm, plainKey.pem, [APPLICATION_PCR, ...bootPcrs], sealedFile);
    return { tpm, tlsKey: plainKey.pem, sealedNow: true };
  }
  let tlsKey: string;
  try {
    tlsKey = unsealTlsKey(tpm, sealedFile);
  } catch (err) {
    tpm.close();
    throw new TreConfigError(
      `this TRE's measurement (code, node binary, configuration or boot) differs from the one its TLS key was sealed to, so the key cannot be unsealed and the TRE refuses to start (${(err as Error).message}). If the change is approved: put the TRE key back at ${plainKey.path}, delete ${sealedFile} and start again to seal it to the new measurement; the regulator whitelists the new release with \`tre attest-policy\`.`,
    );
  }
  if (plainKey.pem && plainKey.pem !== tlsKey) {
    tpm.close();
    throw new TreConfigError(`${plainKey.path} is not the TLS key sealed in ${sealedFile}`);
  }
  return { tpm, tlsKey, sealedNow: false };
}
