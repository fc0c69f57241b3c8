/**
 * `tre attest-policy`: the regulator signs the whitelist of one TRE release and configuration,
 * measured on a reference device (a machine built like the TRE, with its TPM interface: the
 * shared libraries the TRE maps are part of the measurement). `tre measure` lists the same events.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  APPLICATION_PCR,
  attestationPolicyFor,
  eventOf,
  measuredComponents,
  replayPcr,
} from '../attestation/measurement.js';
import { CertificateAuthority } from '../pki/certificate-authority.js';
import { withTpm } from './tpm.js';
import { measuredConfigOf, type TreFlags, treSettingsFrom, withTreOptions } from './tre-options.js';

/** Opens the reference TPM (so this process maps what a TRE maps) and runs `use` with it. */
function onReferenceDevice<T>(tcti: string, use: (pcrRead: (pcr: number) => string) => T): T {
  const keystore = mkdtempSync(join(tmpdir(), 'tre-reference-tpm-'));
  try {
    return withTpm(tcti, keystore, (tpm) => use((pcr) => tpm.pcrRead(pcr).toString('hex')));
  } finally {
    rmSync(keystore, { recursive: true, force: true });
  }
}

export function addAttestPolicyCommand(program: Command): void {
  withTreOptions(
    program
      .command('attest-policy')
      .description(
        "sign the regulator's attestation whitelist: the measurement of this TRE build, its node_modules, node binary, shared libraries and configuration (give the same options as `tre start`)",
      ),
  )
    .requiredOption('--pki <dir>', "the regulator's PKI directory (its CA signs)")
    .requiredOption('--out <file>', 'where to write the signed policy (JWS)')
    .requiredOption(
      '--tpm <tcti>',
      "the reference device's TPM (its boot PCR values are whitelisted with --boot-pcrs)",
    )
    .option('--policy-id <id>', 'policy id', 'tre-release')
    .option(
      '--also-accept <pcr...>',
      'further PCR 23 values to accept, e.g. the release a TRE migrates from (`tre enroll reseal` needs both named)',
    )
    .action(
      async (
        o: TreFlags & { pki: string; out: string; policyId: string; tpm: string; alsoAccept?: string[] },
      ) => {
        const ca = await CertificateAuthority.open(o.pki);
        const settings = treSettingsFrom(o);
        const policy = onReferenceDevice(o.tpm, (pcrRead) =>
          attestationPolicyFor(measuredConfigOf(settings), {
            policyId: o.policyId,
            bootPcrValues: Object.fromEntries(settings.bootPcrs.map((p) => [p, pcrRead(p)])),
            alsoAccept: o.alsoAccept,
          }),
        );
        await writeFile(o.out, `${await ca.signAsRegulator('attestationPolicy', policy)}\n`);
        for (const p of settings.bootPcrs)
          console.log(`${o.out}: PCR ${p} = ${policy.pcrValues[String(p)]![0]} (boot)`);
        console.log(
          `${o.out}: PCR ${APPLICATION_PCR} = ${policy.pcrValues[String(APPLICATION_PCR)]!.join(' or ')}`,
        );
        console.log(`  ${policy.eventDigests.length} measured components (\`tre measure\` lists them)`);
      },
    );
  withTreOptions(
    program
      .command('measure')
      .description(
        'list what a TRE started with these options measures: one line per component (digest, description) and the PCR 23 value they give',
      ),
  )
    .requiredOption('--tpm <tcti>', 'the TPM the TRE uses (its interface libraries are measured)')
    .option('--json', 'print the event log as JSON')
    .action(async (o: TreFlags & { tpm: string; json?: boolean }) => {
      const settings = treSettingsFrom(o);
      const events = onReferenceDevice(o.tpm, () =>
        measuredComponents(measuredConfigOf(settings)).map(eventOf),
      );
      if (o.json) console.log(JSON.stringify(events, null, 2));
      else {
        for (const e of events) console.log(`${e.digest}  ${e.description}`);
        console.log(`PCR ${APPLICATION_PCR} = ${replayPcr(events)} (${events.length} components)`);
      }
    });
}
