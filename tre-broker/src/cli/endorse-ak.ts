/** `tre pki endorse-ak ...`: the regulator's half of enrolling a TRE's TPM attestation key. */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  AkChallengeResponse,
  AkEnrollmentRequest,
  certifyAk,
  challengeAk,
  readEnrollmentFile,
} from '../pki/ak-endorsement.js';
import { CertificateAuthority } from '../pki/certificate-authority.js';

export function addEndorseAkCommands(pki: Command): void {
  const endorse = pki
    .command('endorse-ak')
    .description(
      "certify a TRE's attestation key once its TPM proved it holds it: `challenge`, then (after `tre enroll activate`) `certify`",
    );
  endorse
    .command('challenge')
    .description(
      'check an enrollment request (EK and AK attributes, EK certificate chain) and write a credential only that TPM can open',
    )
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--request <file>', 'the request from `tre enroll request`')
    .option(
      '--ek-ca <pem...>',
      "TPM manufacturers' CA certificates (roots and intermediates) the EK certificate must chain to",
    )
    .option(
      '--allow-uncertified-ek',
      'accept an EK without certificate (swtpm, or an EK you read from the device yourself)',
    )
    .requiredOption('--out <file>', 'where to write the challenge, for `tre enroll activate`')
    .action(
      async (o: {
        dir: string;
        request: string;
        ekCa?: string[];
        allowUncertifiedEk?: boolean;
        out: string;
      }) => {
        const ca = await CertificateAuthority.open(o.dir);
        const request = readEnrollmentFile(AkEnrollmentRequest, o.request);
        const challenge = await challengeAk(ca, request, {
          ekCaCertificates: (o.ekCa ?? []).map((f) => readFileSync(f, 'utf8')),
          allowUncertifiedEk: o.allowUncertifiedEk,
        });
        await writeFile(o.out, `${JSON.stringify(challenge, null, 2)}\n`);
        console.log(
          `${o.out}: challenge for AK ${challenge.akName} of ${challenge.treId}, valid until ${challenge.expiresAt}`,
        );
      },
    );
  endorse
    .command('certify')
    .description('check the TPM recovered the challenge secret, then issue the AK certificate')
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--request <file>', 'the request from `tre enroll request`')
    .requiredOption('--response <file>', 'the response from `tre enroll activate`')
    .requiredOption('--out <file>', 'where to write the AK certificate (the TRE reads <data>/tpm/ak.crt)')
    .action(async (o: { dir: string; request: string; response: string; out: string }) => {
      const ca = await CertificateAuthority.open(o.dir);
      const request = readEnrollmentFile(AkEnrollmentRequest, o.request);
      const response = readEnrollmentFile(AkChallengeResponse, o.response);
      await writeFile(o.out, await certifyAk(ca, request, response));
      console.log(`${o.out}: AK certificate for ${request.treId}`);
    });
}
