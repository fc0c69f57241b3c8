/** `meter-agent`: the household agent's command line, assembled from one module per command group. */
import { Command, CommanderError } from 'commander';
import { DEFAULT_CONFIG_PATH } from './agent-config.js';
import { addAttestCommand } from './cli/attest.js';
import { addBidsCommands } from './cli/bids.js';
import { addFlashCommand } from './cli/flash.js';
import { addImageCommand } from './cli/image.js';
import { addProvisionCommands } from './cli/provision.js';
import { addReadCommand } from './cli/read.js';
import { addRunCommand } from './cli/run.js';
import { addStatusCommand } from './cli/status.js';
import { AGENT_VERSION } from './version.js';

export function buildProgram(): Command {
  const program = new Command('meter-agent')
    .description(
      'household smart-meter agent: reads the meter, sends readings to an attested TRE, bids in demand response',
    )
    .version(AGENT_VERSION)
    .exitOverride()
    .showHelpAfterError()
    .addHelpText(
      'after',
      `
Examples:
  meter-agent provision request --meter m-0001 --key device.key --csr device.csr
  meter-agent provision install --meter m-0001 --key device.key --cert signed.crt --ca ca.crt --out device.crt
  meter-agent attest --tre mqtts://tre.local:8883 --cert device.crt --key device.key --ca ca.crt --policy attestation-policy.jws
  meter-agent run --config ${DEFAULT_CONFIG_PATH}
  meter-agent status
  meter-agent bids list && meter-agent bids approve <bidId>`,
    );
  addRunCommand(program);
  addReadCommand(program);
  addStatusCommand(program);
  addBidsCommands(program);
  addProvisionCommands(program);
  addAttestCommand(program);
  addImageCommand(program);
  addFlashCommand(program);
  return program;
}

/** Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage, 3 refused for good: an enrollment token). */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code.startsWith('agent.')) console.error(`meter-agent: ${err.message}`);
      return err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
        ? 0
        : 2;
    }
    console.error(`meter-agent: ${(err as Error).message}`);
    const code = (err as { exitCode?: unknown }).exitCode;
    return typeof code === 'number' ? code : 1;
  }
}
