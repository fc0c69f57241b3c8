/**
 * `tre enroll ...`: the TRE operator's side of enrolling this TRE: its TPM attestation key
 * (`request`, `activate`), its TLS key born and sealed here (`tls`), and the migration of the sealed
 * keys to an approved release (`reseal`).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { enrollTls, resealForRelease } from '../attestation/tre-enrollment.js';
import {
  AkChallenge,
  answerChallenge,
  enrollmentRequest,
  readEnrollmentFile,
} from '../pki/ak-endorsement.js';
import { pkiPaths } from '../pki/certificate-authority.js';
import { withTpm } from './tpm.js';
import { measuredConfigOf, type TreFlags, treSettingsFrom, withTreOptions } from './tre-options.js';

export function addEnrollCommands(program: Command): void {
  const enroll = program
    .command('enroll')
    .description("enroll this TRE's TPM attestation key with the regulator (`request`, then `activate`)");
  enroll
    .command('request')
    .description(
      'create (once) the attestation key in the TPM and write the EK and AK public areas for the regulator',
    )
    .requiredOption('--tpm <tcti>', 'device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=N')
    .option('--data <dir>', 'TRE data directory (holds the TPM key store)', './tre-data')
    .option('--tre-id <id>', 'the TRE identity', 'tre')
    .requiredOption('--out <file>', 'where to write the request')
    .action(async (o: { tpm: string; data: string; treId: string; out: string }) => {
      const request = withTpm(o.tpm, join(o.data, 'tpm'), (tpm) => enrollmentRequest(tpm, o.treId));
      await writeFile(o.out, `${JSON.stringify(request, null, 2)}\n`);
      console.log(
        `${o.out}: send it to the regulator (${request.ekCertificate ? 'with' : 'no'} EK certificate)`,
      );
    });
  enroll
    .command('activate')
    .description("let the TPM open the regulator's challenge (ActivateCredential) and write the response")
    .requiredOption('--tpm <tcti>', 'device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=N')
    .option('--data <dir>', 'TRE data directory (holds the TPM key store)', './tre-data')
    .requiredOption('--challenge <file>', 'the challenge from `tre pki endorse-ak challenge`')
    .requiredOption('--out <file>', 'where to write the response for the regulator')
    .action(async (o: { tpm: string; data: string; challenge: string; out: string }) => {
      const challenge = readEnrollmentFile(AkChallenge, o.challenge);
      const response = withTpm(o.tpm, join(o.data, 'tpm'), (tpm) => answerChallenge(tpm, challenge));
      await writeFile(o.out, `${JSON.stringify(response, null, 2)}\n`);
      console.log(`${o.out}: send it to the regulator`);
    });
  withTreOptions(
    enroll
      .command('tls')
      .description(
        "make this TRE's TLS key here, seal it (and a new data key) to the measurement `tre start` will have with the same options, and write a certificate request for the regulator (`tre pki sign-csr --role tre`)",
      )
      .option(
        '--tpm <tcti>',
        'device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=N (without: a development key in <pki>/tre.key)',
      )
      .option('--data <dir>', 'TRE data directory (holds the sealed keys)', './tre-data')
      .option(
        '--pki <dir>',
        "the TRE's certificate directory (ca.crt, tre.crt, crl.pem; never the regulator's ca.key)",
        './tre-pki',
      )
      .option('--tre-id <id>', 'the TRE identity', 'tre')
      .option(
        '--host <name...>',
        'DNS names or IP addresses the TRE is reached at (besides localhost, 127.0.0.1)',
      )
      .option('--force', 'replace keys made before')
      .requiredOption('--csr <file>', 'where to write the certificate request'),
  ).action(
    async (
      o: TreFlags & {
        tpm?: string;
        data: string;
        pki: string;
        treId: string;
        host?: string[];
        force?: boolean;
        csr: string;
      },
    ) => {
      const settings = treSettingsFrom(o);
      const done = await enrollTls({
        tcti: o.tpm,
        dataDir: o.data,
        pkiDir: o.pki,
        treId: o.treId,
        hosts: o.host ?? [],
        config: measuredConfigOf(settings),
        bootPcrs: settings.bootPcrs,
        force: o.force,
      });
      await writeFile(o.csr, done.csrPem);
      console.log(
        done.sealedIn
          ? `TLS key and data key made and sealed to this measurement in ${done.sealedIn}`
          : `development (no TPM): the TLS key is unsealed in ${done.developmentKey}`,
      );
      console.log(
        `${o.csr}: send it to the regulator (\`tre pki sign-csr --role tre --id ${o.treId}\`); put the certificate at ${pkiPaths(o.pki).treCert}, with the regulator's ca.crt and crl.pem beside it`,
      );
    },
  );
  withTreOptions(
    enroll
      .command('reseal')
      .description(
        "before updating to an approved release: unseal the TRE's keys under this (old) release's measurement and seal them to the new one named in the regulator's whitelist",
      )
      .requiredOption('--tpm <tcti>', 'device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=N')
      .option('--data <dir>', 'TRE data directory (holds the sealed keys)', './tre-data')
      .option(
        '--pki <dir>',
        "the TRE's certificate directory (its ca.crt verifies the whitelist)",
        './tre-pki',
      )
      .requiredOption(
        '--whitelist <file>',
        'regulator-signed whitelist (JWS) naming this release and the new one',
      )
      .option('--to <pcr>', 'the new release PCR 23 value, when the whitelist names several'),
  ).action(
    async (o: TreFlags & { tpm: string; data: string; pki: string; whitelist: string; to?: string }) => {
      const settings = treSettingsFrom(o);
      const moved = await resealForRelease({
        tcti: o.tpm,
        dataDir: o.data,
        config: measuredConfigOf(settings),
        bootPcrs: settings.bootPcrs,
        whitelistJws: await readFile(o.whitelist, 'utf8'),
        caCertPem: await readFile(pkiPaths(o.pki).caCert, 'utf8'),
        to: o.to,
      });
      console.log(
        `keys re-sealed from PCR 23 ${moved.from} to ${moved.to}: install the new release now; this one no longer starts`,
      );
    },
  );
}
