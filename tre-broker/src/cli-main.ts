/** `tre`: the TRE's command line (PKI for the regulator, and the broker itself). */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tpm } from '@tre/hardware';
import { AcceleratedClock, isPartyRole, type PartyRole, systemClock } from '@tre/protocol';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { APPLICATION_PCR, attestationPolicyFor } from './attestation/measurement.js';
import { createLogger } from './log.js';
import type { MonitoringOptions } from './monitoring/monitoring-service.js';
import {
  AkChallenge,
  AkChallengeResponse,
  AkEnrollmentRequest,
  answerChallenge,
  certifyAk,
  challengeAk,
  enrollmentRequest,
  readEnrollmentFile,
} from './pki/ak-endorsement.js';
import { CertificateAuthority, type IssuedFiles } from './pki/certificate-authority.js';
import { HouseholdRegistry } from './registry/household-registry.js';
import { Store } from './store/store.js';
import { startTre } from './tre.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function parseRole(value: string): PartyRole {
  if (!isPartyRole(value))
    throw new CommanderError(
      2,
      'tre.role',
      `--role must be one of meter, dno, supplier, dsm, regulator (got ${value})`,
    );
  return value;
}

function printFiles(files: IssuedFiles, json: boolean): void {
  if (json) console.log(JSON.stringify(files));
  else console.log(`key:  ${files.key}\ncert: ${files.cert}\nca:   ${files.ca}`);
}

export function buildProgram(): Command {
  const program = new Command('tre')
    .description(
      'Trustworthy Remote Entity: mutual-TLS MQTT broker for smart-meter monitoring, billing and demand response',
    )
    .version(pkg.version)
    .exitOverride()
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  tre pki init --dir ./pki                      create the regulator CA and the TRE certificate
  tre pki issue --dir ./pki --role meter --id m1  issue a meter's client certificate
  tre start --pki ./pki --data ./data --port 8883 run the broker`,
    );

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
    .addOption(
      new Option('--role <role>', 'party role')
        .choices(['meter', 'dno', 'supplier', 'dsm', 'regulator'])
        .makeOptionMandatory(),
    )
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
    .addOption(
      new Option('--role <role>', 'party role')
        .choices(['meter', 'dno', 'supplier', 'dsm', 'regulator'])
        .makeOptionMandatory(),
    )
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

  const registry = program.command('registry').description('household registry (works while the TRE runs)');
  const withRegistry = async (dataDir: string, fn: (r: HouseholdRegistry) => Promise<void>) => {
    const store = Store.openIn(dataDir);
    try {
      await fn(new HouseholdRegistry(store));
    } finally {
      store.close();
    }
  };
  registry
    .command('add')
    .description('register (or update) one household')
    .option('--data <dir>', 'TRE data directory', './tre-data')
    .requiredOption('--meter <id>', 'meter id (as in its certificate)')
    .requiredOption('--supplier <id>', 'supplier id')
    .requiredOption('--dno <id>', 'DNO id')
    .requiredOption('--capacity <watts>', 'installed capacity in W', (v) => Number(v))
    .requiredOption('--account <account>', 'billing account')
    .action(
      async (o: {
        data: string;
        meter: string;
        supplier: string;
        dno: string;
        capacity: number;
        account: string;
      }) => {
        await withRegistry(o.data, async (r) => {
          await r.upsert([
            {
              meterId: o.meter,
              supplierId: o.supplier,
              dnoId: o.dno,
              capacityW: o.capacity,
              account: o.account,
            },
          ]);
          console.log(`registered 1 household (${r.count()} in total)`);
        });
      },
    );
  registry
    .command('import')
    .description('register households from a CSV file with header meterId,supplierId,dnoId,capacityW,account')
    .option('--data <dir>', 'TRE data directory', './tre-data')
    .requiredOption('--file <csv>', 'households CSV')
    .action(async (o: { data: string; file: string }) => {
      const households = HouseholdRegistry.parseCsv(readFileSync(o.file, 'utf8'), o.file);
      await withRegistry(o.data, async (r) => {
        await r.upsert(households);
        console.log(`registered ${households.length} households (${r.count()} in total)`);
      });
    });

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
    .action(
      async (
        o: {
          pki: string;
          out: string;
          policyId: string;
          bootPcrs?: number[];
          tpm?: string;
        } & MonitoringFlags,
      ) => {
        const ca = await CertificateAuthority.open(o.pki);
        const boot: Record<number, string> = {};
        if (o.bootPcrs?.length) {
          if (!o.tpm)
            throw new Error(
              '--boot-pcrs needs --tpm: the reference device whose boot PCR values are approved',
            );
          withTpm(o.tpm, join(o.pki, 'reference-tpm'), (tpm) => {
            for (const p of o.bootPcrs!) boot[p] = tpm.pcrRead(p).toString('hex');
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
      },
    );

  withMonitoringOptions(
    program
      .command('start')
      .description('run the TRE broker (SIGTERM or Ctrl-C stops it gracefully)')
      .option('--pki <dir>', 'PKI directory made by `tre pki init`', './pki')
      .option('--data <dir>', 'data directory (SQLite store)', './tre-data')
      .option('--host <host>', 'address to listen on', '127.0.0.1')
      .option(
        '--port <port>',
        'port to listen on; 0 picks a free one (the log says which)',
        (v) => Number.parseInt(v, 10),
        8883,
      )
      .option('--log-level <level>', 'pino log level', process.env.TRE_LOG_LEVEL ?? 'info')
      .option(
        '--tpm <tcti>',
        'the TPM: device:/dev/tpmrm0 (Pi HAT) or swtpm:host=127.0.0.1,port=N; needs <data>/tpm/ak.crt (tre pki endorse-ak)',
      )
      .option(
        '--boot-pcrs <list>',
        'with --tpm on a machine with measured boot: quote these boot PCRs too and seal the TLS key to them (e.g. 0,1,2,3,4,5,6,7)',
        pcrList,
      )
      .option(
        '--clock-speed <x>',
        'run the TRE clock x times faster than real time (demos and tests)',
        Number,
        1,
      )
      .option(
        '--clock-epoch <ms>',
        'real instant (ms since epoch) from which the faster clock runs; the same value continues one timeline across restarts',
        Number,
      ),
  ).action(
    async (
      o: {
        pki: string;
        data: string;
        host: string;
        port: number;
        logLevel: string;
        clockSpeed: number;
        tpm?: string;
        bootPcrs?: number[];
        clockEpoch?: number;
      } & MonitoringFlags,
    ) => {
      const log = createLogger({ level: o.logLevel });
      const monitoring = monitoringFrom(o);
      // Signals are taken from the start, so a stop during start-up is still graceful.
      const stopped = new Promise<string>((resolve) => {
        process.once('SIGTERM', () => resolve('SIGTERM'));
        process.once('SIGINT', () => resolve('SIGINT'));
      });
      const tre = await startTre({
        pkiDir: o.pki,
        dataDir: o.data,
        host: o.host,
        port: o.port,
        log,
        monitoring,
        tpm: o.tpm ? { tcti: o.tpm, bootPcrs: o.bootPcrs } : undefined,
        measuredConfig: measuredConfigOf(monitoring),
        clock:
          o.clockSpeed === 1 ? systemClock : new AcceleratedClock(o.clockEpoch ?? Date.now(), o.clockSpeed),
      });
      const signal = await stopped; // already settled if the signal came during start-up
      log.info({ signal }, 'stopping');
      await tre.stop().catch((err: Error) => log.error({ err }, 'unclean stop'));
    },
  );
  return program;
}

/** The TPM for one command, closed after it whatever happens. */
function withTpm<T>(tcti: string, keystoreDir: string, use: (tpm: Tpm) => T): T {
  const tpm = Tpm.open({ tcti, keystoreDir });
  try {
    return use(tpm);
  } finally {
    tpm.close();
  }
}

interface MonitoringFlags {
  minGroupSize: number;
  epsilon: string;
  dailyBudget: number;
  releaseMinutes: number;
}

/** The monitoring options: `tre start` runs with them, `tre attest-policy` whitelists them. */
function withMonitoringOptions(command: Command): Command {
  return command
    .option(
      '--min-group-size <n>',
      'smallest DNO aggregation group (never below 2)',
      (v) => Number.parseInt(v, 10),
      50,
    )
    .option('--epsilon <p/q>', 'privacy parameter of one aggregate release, as a fraction', '1/1')
    .option('--daily-budget <epsilon>', 'privacy budget per household per UTC day', Number, 100)
    .option(
      '--release-minutes <m>',
      'aggregate release interval: 15 or 30',
      (v) => Number.parseInt(v, 10),
      30,
    );
}

function monitoringFrom(o: MonitoringFlags): MonitoringOptions {
  const eps = /^(\d+)\/(\d+)$/.exec(o.epsilon);
  if (!eps)
    throw new CommanderError(2, 'tre.epsilon', `--epsilon must be a fraction such as 1/2 (got ${o.epsilon})`);
  if (o.releaseMinutes !== 15 && o.releaseMinutes !== 30)
    throw new CommanderError(2, 'tre.release', '--release-minutes must be 15 or 30');
  return {
    minGroupSize: o.minGroupSize,
    epsilon: [Number(eps[1]), Number(eps[2])],
    dailyBudget: o.dailyBudget,
    releaseMinutes: o.releaseMinutes,
  };
}

/** What the TRE measures as its configuration: the regulator's whitelist must be made from the same. */
const measuredConfigOf = (monitoring: MonitoringOptions) => ({ monitoring });

function pcrList(v: string): number[] {
  const pcrs = v.split(',').map((p) => Number(p.trim()));
  if (pcrs.some((p) => !Number.isInteger(p) || p < 0 || p > 15))
    throw new InvalidArgumentError('a comma-separated list of boot PCRs 0-15, e.g. 0,1,2,3,4,5,6,7');
  return pcrs;
}

/** Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0)
        return 0;
      if (err.code.startsWith('tre.')) console.error(`tre: ${err.message}`);
      return 2;
    }
    console.error(`tre: ${(err as Error).message}`);
    return 1;
  }
}
