/**
 * Each table has one owner module: SQL naming a table anywhere else in any workspace's `src/`
 * fails here. A new table must be given its owner below. (Tests may read tables directly to
 * check stored state; that is what tests are for.)
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const OWNERS: Record<string, string> = {
  migrations: 'tre-broker/src/store/store.ts',
  households: 'tre-broker/src/registry/household-registry.ts',
  registry_updates: 'tre-broker/src/registry/household-registry.ts',
  household_shards: 'tre-broker/src/registry/household-registry.ts',
  readings: 'tre-broker/src/ingest/reading-store.ts',
  alerts: 'tre-broker/src/ingest/reading-store.ts',
  dno_groups: 'tre-broker/src/monitoring/group-book.ts',
  releases: 'tre-broker/src/monitoring/group-book.ts',
  privacy_budget: 'tre-broker/src/monitoring/privacy-budget.ts',
  group_partials: 'tre-broker/src/monitoring/group-partials.ts',
  ledger: 'tre-broker/src/billing/ledger.ts',
  tariffs: 'tre-broker/src/billing/tariff-book.ts',
  billing_periods: 'tre-broker/src/billing/period-book.ts',
  billing_calendar: 'tre-broker/src/billing/period-book.ts',
  statements: 'tre-broker/src/billing/statement-book.ts',
  regulator_config: 'tre-broker/src/regulator/regulator-config.ts',
  dr_events: 'tre-broker/src/demand-response/dr-book.ts',
  dr_bids: 'tre-broker/src/demand-response/dr-book.ts',
  dr_gateway_rounds: 'tre-broker/src/demand-response/round-gateway.ts',
  dr_gateway_batches: 'tre-broker/src/demand-response/round-gateway.ts',
  dr_gateway_bids: 'tre-broker/src/demand-response/round-gateway.ts',
};

const root = fileURLToPath(new URL('../..', import.meta.url));
const WORKSPACES = ['protocol', 'hardware', 'hems-policy', 'tre-broker', 'meter-agent', 'sim', 'bench'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return /\.(ts|js|mjs)$/.test(name) ? [path] : [];
  });
}

/** Tables named by SQL in `code` (comments removed; SQL keywords are upper case here). */
export function tablesNamed(code: string): { table: string; created: boolean }[] {
  const uncommented = code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:])\/\/.*$/gm, '$1');
  const out: { table: string; created: boolean }[] = [];
  const re =
    /\b(CREATE TABLE|FROM|JOIN|INTO|UPDATE|INDEX\s+(?:IF NOT EXISTS\s+)?\w+\s+ON)\s+(?:IF NOT EXISTS\s+)?([a-z_][a-z0-9_]*)\b/g;
  for (const m of uncommented.matchAll(re)) out.push({ table: m[2]!, created: m[1] === 'CREATE TABLE' });
  return out;
}

describe('table owners', () => {
  it('finds tables in SQL and ignores comments (the check itself can fail)', () => {
    expect(tablesNamed("db.prepare('SELECT x FROM readings r JOIN households h ON h.id = r.id')")).toEqual([
      { table: 'readings', created: false },
      { table: 'households', created: false },
    ]);
    expect(tablesNamed('// rows come FROM readings\nconst a = 1;')).toEqual([]);
    expect(tablesNamed('`CREATE TABLE IF NOT EXISTS ledger (a INTEGER)`')).toEqual([
      { table: 'ledger', created: true },
    ]);
  });

  it('no src/ file names a table it does not own, and every created table has an owner', () => {
    const violations: string[] = [];
    for (const w of WORKSPACES) {
      for (const file of sources(join(root, w, 'src'))) {
        const path = relative(root, file);
        for (const { table, created } of tablesNamed(readFileSync(file, 'utf8'))) {
          const owner = OWNERS[table];
          if (!owner) {
            if (created) violations.push(`${path} creates table ${table}, which has no owner in this test`);
            continue; // not a table (json_each, a CTE, ...)
          }
          if (owner !== path) violations.push(`${path} names table ${table}, owned by ${owner}`);
        }
      }
    }
    expect(violations).toEqual([]);
  });
});
