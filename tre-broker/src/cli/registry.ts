/** `tre registry ...`: the household registry, editable while the TRE runs. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { HouseholdRegistry } from '../registry/household-registry.js';
import { Store } from '../store/store.js';

async function withRegistry(dataDir: string, fn: (r: HouseholdRegistry) => Promise<void>): Promise<void> {
  const store = Store.openIn(dataDir);
  try {
    await fn(new HouseholdRegistry(store));
  } finally {
    store.close();
  }
}

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
}
