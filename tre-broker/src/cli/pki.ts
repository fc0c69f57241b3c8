/** `tre pki ...`: the regulator's root CA, client certificates and revocation. */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { isPartyRole, PARTY_ROLES, type PartyRole } from '@tre/protocol';
import { type Command, CommanderError, Option } from 'commander';
import { CertificateAuthority, type IssuedFiles } from '../pki/certificate-authority.js';
import { addEndorseAkCommands } from './endorse-ak.js';

function parseRole(value: string): PartyRole {
  if (!isPartyRole(value))
    throw new CommanderError(2, 'tre.role', `--role must be one of ${PARTY_ROLES.join(', ')} (got ${value})`);
  return value;
}

const roleOption = () => new Option('--role <role>', 'party role').choices(PARTY_ROLES).makeOptionMandatory();

function printFiles(files: IssuedFiles, json: boolean): void {
  if (json) console.log(JSON.stringify(files));
  else console.log(`key:  ${files.key}\ncert: ${files.cert}\nca:   ${files.ca}`);
}

export function addPkiCommands(program: Command): void {
  const pki = program.command('pki').description('regulator PKI: root CA, client certificates, revocation');
  pki
    .command('init')
    .description(
      "create the regulator's root CA and an empty CRL (keep this directory on the regulator's machine: the TRE's machine holds only ca.crt and crl.pem)",
    )
    .requiredOption('--dir <dir>', 'PKI directory')
    .option('--force', 'overwrite an existing PKI')
    .action(async (o: { dir: string; force?: boolean }) => {
      const { ca } = await CertificateAuthority.init(o.dir, { force: o.force });
      console.log(`root CA: ${ca.paths.caCert} (key ${ca.paths.caKey}, 0600)\nCRL:     ${ca.paths.crl}`);
    });
  pki
    .command('issue')
    .description("issue a party's client certificate with SAN URI urn:tre:<role>:<id>")
    .requiredOption('--dir <dir>', 'PKI directory')
    .addOption(roleOption())
    .requiredOption('--id <id>', 'party id: 1-64 of a-z 0-9 . _ -')
    .option('--days <n>', 'validity in days', (v) => Number.parseInt(v, 10), 825)
    .option('--force', 'reissue even if a certificate exists')
    .option('--json', 'print {"key","cert","ca"} as JSON')
    .action(
      async (o: { dir: string; role: string; id: string; days: number; force?: boolean; json?: boolean }) => {
        const ca = await CertificateAuthority.open(o.dir);
        printFiles(
          await ca.issue(parseRole(o.role), o.id, { force: o.force, validity: { days: o.days } }),
          !!o.json,
        );
      },
    );
  pki
    .command('sign-csr')
    .description(
      'sign a certificate request made on a device or on the TRE (its key never leaves it): --role tre makes the TRE server certificate',
    )
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--csr <file>', 'PKCS#10 request, PEM')
    .addOption(
      new Option('--role <role>', 'party role, or tre')
        .choices([...PARTY_ROLES, 'tre'])
        .makeOptionMandatory(),
    )
    .requiredOption('--id <id>', 'party or TRE id')
    .option(
      '--host <name...>',
      "with --role tre: the TRE's DNS names or IP addresses (default: those the request asks for)",
    )
    .requiredOption('--out <file>', 'where to write the certificate')
    .action(
      async (o: { dir: string; csr: string; role: string; id: string; host?: string[]; out: string }) => {
        const ca = await CertificateAuthority.open(o.dir);
        const role = o.role === 'tre' ? 'tre' : parseRole(o.role);
        const pem = await ca.signRequest(readFileSync(o.csr, 'utf8'), role, o.id, undefined, o.host);
        await writeFile(o.out, pem);
        console.log(o.out);
      },
    );
  pki
    .command('revoke')
    .description('revoke a party; the broker refuses it at connect and drops its live session within seconds')
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--role <role>', 'party role')
    .requiredOption('--id <id>', 'party id')
    .action(async (o: { dir: string; role: string; id: string }) => {
      const ca = await CertificateAuthority.open(o.dir);
      const serials = await ca.revoke(o.role, o.id);
      console.log(`revoked ${serials.length} certificate(s): ${serials.join(', ')}`);
    });
  addEndorseAkCommands(pki);
}
