/** The built command lines as a user runs them: a child process, its exit code and output. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function runNode(script: string, args: string[]): Promise<CliResult> {
  return run(process.execPath, [script, ...args]).then(
    (r) => ({ code: 0, ...r }),
    (e: CliResult) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

export const treCli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const meterAgentCli = fileURLToPath(new URL('../../../meter-agent/dist/cli.js', import.meta.url));
const trepartyCli = fileURLToPath(new URL('../../../sim/dist/cli-party.js', import.meta.url));

/** `tre ...` */
export const tre = (...args: string[]) => runNode(treCli, args);
/** `tre-party ...` */
export const treParty = (...args: string[]) => runNode(trepartyCli, args);
/** `meter-agent ...` */
export const meterAgent = (...args: string[]) => runNode(meterAgentCli, args);
