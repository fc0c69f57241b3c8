/** `tre attest-policy`: the regulator signs the whitelist of one TRE release and configuration. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { APPLICATION_PCR, attestationPolicyFor, bootPcrsOf } from '../attestation/measurement.js';
import { CertificateAuthority } from '../pki/certificate-authority.js';
import {
  type MonitoringFlags,
  measuredConfigOf,
  monitoringFrom,
  withMonitoringOptions,
} from './monitoring-options.js';
import { pcrList, withTpm } from './tpm.js';

interface AttestPolicyFlags extends MonitoringFlags {
  pki: string;
  out: string;
  policyId: string;
  bootPcrs?: number[];
  tpm?: string;
}

export function addAttestPolicyCommand(program: Command): void {
  withMonitoringOptions(
    program
      .command('attest-policy')
      .description(
        "sign the regulator's attestation whitelist: the measurements of this TRE build, node binary and configuration (the same monitoring options as `tre start`)",
      ),
  )
    .requiredOption('--pki <dir>', 'PKI directory (the regulator CA signs)')
    .requiredOption('--out <file>', 'where to write the signed policy (JWS)')
    .option('--policy-id <id>', 'policy id', 'tre-release')
    .option(
      '--boot-pcrs <list>',
      'also whitelist these boot PCRs (e.g. 0,1,2,3,4,5,6,7) with their values on --tpm, a reference device booted as approved',
      pcrList,
    )
    .option('--tpm <tcti>', 'the reference device TPM to read --boot-pcrs from')
    .action(async (o: AttestPolicyFlags) => {
      const ca = await CertificateAuthority.open(o.pki);
      const bootPcrs = bootPcrsOf(o.bootPcrs);
      const boot: Record<number, string> = {};
      if (bootPcrs.length) {
        if (!o.tpm)
          throw new Error('--boot-pcrs needs --tpm: the reference device whose boot PCR values are approved');
        withTpm(o.tpm, join(o.pki, 'reference-tpm'), (tpm) => {
          for (const p of bootPcrs) boot[p] = tpm.pcrRead(p).toString('hex');
        });
      }
      const policy = attestationPolicyFor(measuredConfigOf(monitoringFrom(o)), {
        policyId: o.policyId,
        bootPcrValues: boot,
      });
      await writeFile(o.out, `${await ca.signAsRegulator('attestationPolicy', policy)}\n`);
      for (const [p, v] of Object.entries(boot)) console.log(`${o.out}: PCR ${p} = ${v} (boot)`);
      console.log(`${o.out}: PCR ${APPLICATION_PCR} = ${policy.pcrValues[String(APPLICATION_PCR)]![0]}`);
      for (const e of policy.eventDigests) console.log(`  ${e.digest}  ${e.description}`);
    });
}
