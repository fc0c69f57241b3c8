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
    .description('create the regulator root CA and the TRE server certificate')
    .requiredOption('--dir <dir>', 'PKI directory')
    .option('--tre-id <id>', 'TRE identity (SAN URI urn:tre:tre:<id>)', 'tre')
    .option('--host <name...>', 'extra DNS names or IP addresses for the TRE certificate')
    .option('--force', 'overwrite an existing PKI')
    .option('--json', 'print {"key","cert","ca"} of the TRE certificate as JSON')
    .action(async (o: { dir: string; treId: string; host?: string[]; force?: boolean; json?: boolean }) => {
      const { tre } = await CertificateAuthority.init(o.dir, {
        treId: o.treId,
        hosts: o.host ?? [],
        force: o.force,
      });
      printFiles(tre, !!o.json);
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
    .description('sign a certificate request made on a device (its key never leaves the device)')
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--csr <file>', 'PKCS#10 request, PEM')
    .addOption(roleOption())
    .requiredOption('--id <id>', 'party id')
    .requiredOption('--out <file>', 'where to write the certificate')
    .action(async (o: { dir: string; csr: string; role: string; id: string; out: string }) => {
      const ca = await CertificateAuthority.open(o.dir);
      const pem = await ca.signRequest(readFileSync(o.csr, 'utf8'), parseRole(o.role), o.id);
      await writeFile(o.out, pem);
      console.log(o.out);
    });
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
