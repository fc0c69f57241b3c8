/**
 * `tre registry ...`: the household registry of a development TRE (no TPM), editable while it
 * runs. A TRE with a TPM has its store sealed to its measurement: its households come from the
 * regulator's signed registry updates over MQTT.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { HouseholdRegistry, registerHouseholds } from '../registry/household-registry.js';

export function addRegistryCommands(program: Command): void {
  const registry = program.command('registry').description('household registry (works while the TRE runs)');
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
        const { total } = await registerHouseholds(o.data, [
          {
            meterId: o.meter,
            supplierId: o.supplier,
            dnoId: o.dno,
            capacityW: o.capacity,
            account: o.account,
          },
        ]);
        console.log(`registered 1 household (${total} in total)`);
      },
    );
  registry
    .command('import')
    .description('register households from a CSV file with header meterId,supplierId,dnoId,capacityW,account')
    .option('--data <dir>', 'TRE data directory', './tre-data')
    .requiredOption('--file <csv>', 'households CSV')
    .action(async (o: { data: string; file: string }) => {
      const households = HouseholdRegistry.parseCsv(readFileSync(o.file, 'utf8'), o.file);
      const { registered, total } = await registerHouseholds(o.data, households);
      console.log(`registered ${registered} households (${total} in total)`);
    });
}
