/**
 * `tre`: the TRE's command line (PKI for the regulator, and the broker itself). One file per command
 * group under `cli/`; this file assembles them and maps failures to exit codes.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { addAttestPolicyCommand } from './cli/attest-policy.js';
import { addClusterCommand } from './cli/cluster.js';
import { addEnrollCommands } from './cli/enroll.js';
import { addPkiCommands } from './cli/pki.js';
import { addRegistryCommands } from './cli/registry.js';
import { addStartCommand } from './cli/start.js';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

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
  regulator:   tre pki init --dir ./regulator
               tre pki issue --dir ./regulator --role meter --id m1
  TRE machine: tre enroll tls --pki ./tre-pki --csr tre.csr [--tpm T]   (key made and sealed here)
  regulator:   tre pki sign-csr --dir ./regulator --role tre --id tre --csr tre.csr --out tre.crt
  TRE machine: tre start --pki ./tre-pki --data ./tre-data [--tpm T]     (tre-pki: ca.crt crl.pem tre.crt)
  tre <command> --help                                                  every option of a command`,
    );
  addPkiCommands(program);
  addRegistryCommands(program);
  addEnrollCommands(program);
  addAttestPolicyCommand(program);
  addStartCommand(program);
  addClusterCommand(program);
  return program;
}

/** Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    // A command may end with a status of its own (`tre start`: 1 after its shard lease was lost).
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
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
