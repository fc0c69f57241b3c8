/** `tre enroll ...`: the TRE operator's half of enrolling this TRE's TPM attestation key. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  AkChallenge,
  answerChallenge,
  enrollmentRequest,
  readEnrollmentFile,
} from '../pki/ak-endorsement.js';
import { withTpm } from './tpm.js';

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
}
