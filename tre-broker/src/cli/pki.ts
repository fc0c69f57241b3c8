/**
 * `tre pki ...`: the regulator's root CA, client certificates, revocation, and zero-touch device
 * enrollment (one-time tokens, the EST service).
 */
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { takeStopSignals } from '@tre/hardware';
import { assertId, isPartyRole, PARTY_ROLES, type PartyRole } from '@tre/protocol';
import { type Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { createLogger } from '../log.js';
import { parseListenAddress } from '../metrics/metrics-server.js';
import { CertificateAuthority, type IssuedFiles } from '../pki/certificate-authority.js';
import { parseDuration } from '../pki/enrollment-rules.js';
import { EnrollmentService, EST_PATH } from '../pki/enrollment-service.js';
import { EnrollmentTokens } from '../pki/enrollment-tokens.js';
import { addEndorseAkCommands } from './endorse-ak.js';

/** The enrollment service's clean stop not done this long after SIGTERM exits with status 1. */
const STOP_BOUND_MS = 60_000;

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
  const pki = program
    .command('pki')
    .description('regulator PKI: root CA, client certificates, revocation, zero-touch device enrollment');
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
    .description(
      "issue a party's client certificate with SAN URI urn:tre:<role>:<id>, its key made here: pre-provisioning for small batches only, since the private key then travels (into a device image); for fleets the device makes its key and enrolls (tre pki token, tre pki serve-enrollment)",
    )
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
  addEnrollmentCommands(pki);
  addEndorseAkCommands(pki);
}

function optionParser<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/** `tre pki token` and `tre pki serve-enrollment`: zero-touch enrollment, the device's key made on it. */
function addEnrollmentCommands(pki: Command): void {
  pki
    .command('token')
    .description(
      'make a one-time enrollment token for a meter (zero-touch: the device makes its key on first boot and enrolls with the token at `tre pki serve-enrollment`); the token is shown once, only its hash is kept',
    )
    .requiredOption('--dir <dir>', 'PKI directory')
    .requiredOption('--meter <id>', 'the meter the token enrolls: 1-64 of a-z 0-9 . _ -')
    .addOption(
      new Option('--expires <duration>', 'lifetime: s, m, h or d (e.g. 12h, 7d); at most 365d')
        .argParser(optionParser(parseDuration))
        .default(parseDuration('7d'), '7d'),
    )
    .option('--out <file>', 'write the token to this file (0600, never overwritten) instead of printing it')
    .action(async (o: { dir: string; meter: string; expires: number; out?: string }) => {
      assertId(o.meter, 'meter id');
      await CertificateAuthority.open(o.dir);
      if (o.out && existsSync(o.out))
        throw new Error(`${o.out} already exists: a token file is never overwritten; give another --out`);
      const expiresAt = new Date(Date.now() + o.expires);
      const token = await new EnrollmentTokens(o.dir).create(o.meter, expiresAt);
      const what = `single-use enrollment token for meter ${o.meter}, expires ${expiresAt.toISOString()}`;
      if (o.out) {
        await writeFile(o.out, `${token}\n`, { mode: 0o600, flag: 'wx' });
        console.log(`${o.out}: ${what}`);
      } else {
        console.error(`${what} (shown once):`);
        console.log(token);
      }
    });
  pki
    .command('serve-enrollment')
    .description(
      `run the EST enrollment service (RFC 7030) devices enroll at with their token (meter-agent provision enroll): GET ${EST_PATH}/cacerts, POST ${EST_PATH}/simpleenroll with HTTP Basic <meter id>:<token>; SIGTERM or Ctrl-C stops it`,
    )
    .requiredOption('--dir <dir>', 'PKI directory (the CA signs here: run it on the regulator side)')
    .addOption(
      new Option(
        '--listen <host:port>',
        'address to listen on (port 0 picks a free one; the log line says which)',
      )
        .argParser(optionParser(parseListenAddress))
        .default(parseListenAddress('127.0.0.1:8443'), '127.0.0.1:8443'),
    )
    .option(
      '--host <name...>',
      'DNS names or IP addresses devices reach the service at, for the server certificate the CA issues (default: the --listen address, localhost, 127.0.0.1)',
    )
    .option('--tls-cert <file>', 'use this server certificate (PEM) instead, with --tls-key')
    .option('--tls-key <file>', "the --tls-cert's key (PEM)")
    .option('--log-level <level>', 'pino log level (or TRE_LOG_LEVEL)')
    .action(
      async (o: {
        dir: string;
        listen: { host: string; port: number };
        host?: string[];
        tlsCert?: string;
        tlsKey?: string;
        logLevel?: string;
      }) => {
        if (!o.tlsCert !== !o.tlsKey)
          throw new CommanderError(
            2,
            'tre.tls',
            '--tls-cert and --tls-key go together: give both or neither',
          );
        const ca = await CertificateAuthority.open(o.dir);
        const wildcard = ['0.0.0.0', '::'].includes(o.listen.host);
        const hosts = o.host ?? [...(wildcard ? [] : [o.listen.host]), 'localhost', '127.0.0.1'];
        const tls =
          o.tlsCert && o.tlsKey
            ? { cert: readFileSync(o.tlsCert), key: readFileSync(o.tlsKey) }
            : await ca.issueEnrollmentServer(hosts);
        const log = createLogger({ level: o.logLevel, name: 'tre-enrollment' });
        // Kept until stopped: a second signal cannot cut the stop short.
        const signals = takeStopSignals({
          boundMs: STOP_BOUND_MS,
          say: (message, { kind, signal }) =>
            kind === 'overdue' ? log.error({ signal }, message) : log.warn({ signal }, message),
        });
        try {
          const service = new EnrollmentService({
            ca,
            tokens: new EnrollmentTokens(o.dir),
            tls,
            host: o.listen.host,
            port: o.listen.port,
            log,
          });
          await service.start();
          const signal = await signals.first;
          log.info({ signal }, 'stopping');
          await service.stop();
        } finally {
          signals.dispose();
        }
      },
    );
}
