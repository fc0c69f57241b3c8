/** `tre-party`: tools for a grid party's (DNO, supplier, DSM, regulator) own software. */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { addAttestCommand } from './party-attest.js';
import { addDsmCommands } from './party-dsm.js';
import { addRegistryCommand } from './party-registry.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

export function buildProgram(): Command {
  const program = new Command('tre-party')
    .description(
      "a grid party's tools against a TRE: attest it (TPM quote, regulator root, CRL and whitelist) before sending anything",
    )
    .version(pkg.version)
    .exitOverride()
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  tre-party attest --role dno --id dno-1 --tre mqtts://tre.local:8883 \\
    --cert dno-dno-1.crt --key dno-dno-1.key --ca ca.crt --policy attestation-policy.jws
  tre-party attest --role supplier --id s1 --tre mqtts://tre.local:8883 --cert s1.crt --key s1.key \\
    --ca pki/ca.crt --crl pki/crl.pem --policy attestation-policy.jws --json
  tre-party registry --role regulator --id r1 --tre mqtts://tre.local:8883 --cert r1.crt --key r1.key \
    --ca pki/ca.crt --policy attestation-policy.jws --file households.csv
  tre-party dsm cancel evt-1 --role dsm --id x1 --tre mqtts://tre.local:8883 --cert x1.crt --key x1.key \
    --ca pki/ca.crt --policy attestation-policy.jws
  tre-party dsm modify evt-1 --bid-deadline 2026-03-18T17:00:00Z --price-cap 300000 --role dsm --id x1 ...`,
    );
  addAttestCommand(program);
  addRegistryCommand(program);
  addDsmCommands(program);
  return program;
}

/** Runs the CLI; returns the exit code (0 ok / trusted, 1 failure / not trusted, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError)
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
        ? 0
        : 2;
    console.error(`tre-party: ${(err as Error).message}`);
    return 1;
  }
}
