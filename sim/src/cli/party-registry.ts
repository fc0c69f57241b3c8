/**
 * `tre-party registry`: the regulator registers households with a TRE whose store is sealed to its
 * measurement: it attests the TRE first, then sends the households of a CSV file as signed registry
 * updates (JWS with its own key, a later `issuedAt` each) and waits for the TRE's receipts.
 */
import { readFile } from 'node:fs/promises';
import { HouseholdRegistry } from '@tre/tre-broker';
import type { Command } from 'commander';
import { registerHouseholds } from '../parties/regulator.js';
import { type AttestOptions, asTrustedParty, withPartyOptions } from './party-attest.js';

export function addRegistryCommand(program: Command): void {
  withPartyOptions(
    program
      .command('registry')
      .description(
        'as the regulator: attest the TRE, then register (or update) the households of a CSV file with it, as signed registry updates',
      ),
    ['regulator'],
  )
    .requiredOption('--file <csv>', 'households CSV with header meterId,supplierId,dnoId,capacityW,account')
    .action(async (o: AttestOptions & { file: string }) => {
      const households = HouseholdRegistry.parseCsv(await readFile(o.file, 'utf8'), o.file);
      await asTrustedParty(o, async ({ party, key }) => {
        await registerHouseholds(party, o.id, households, key, Date.now());
        console.log(`registered ${households.length} households with ${o.tre}`);
      });
    });
}
