/** The TPM as the commands use it: opened for one command, and the `--boot-pcrs` list. */
import { Tpm } from '@tre/hardware';
import { InvalidArgumentError } from 'commander';
import { bootPcrsOf } from '../attestation/measurement.js';
import { TreConfigError } from '../tre-config-error.js';

/** The TPM for one command, closed after it whatever happens. */
export function withTpm<T>(tcti: string, keystoreDir: string, use: (tpm: Tpm) => T): T {
  const tpm = Tpm.open({ tcti, keystoreDir });
  try {
    return use(tpm);
  } finally {
    tpm.close();
  }
}

/**
 * `--boot-pcrs 0,1,2`: the comma-separated list as numbers (a word that is not one is a usage error).
 * Which PCRs are boot PCRs is the core's rule (`bootPcrsOf`); a list it refuses is a usage error too,
 * with the core's message.
 */
export function pcrList(v: string): number[] {
  const items = v.split(',').map((p) => p.trim());
  const notANumber = items.find((p) => Number.isNaN(Number(p)));
  if (notANumber !== undefined)
    throw new InvalidArgumentError(`"${notANumber}" is not a number: a comma-separated list such as 0,1,2,3`);
  const pcrs = items.map(Number);
  try {
    bootPcrsOf(pcrs);
  } catch (err) {
    if (err instanceof TreConfigError) throw new InvalidArgumentError(err.message);
    throw err;
  }
  return pcrs;
}
