#!/usr/bin/env node
// `tre-party`: runs the built CLI. Committed (dist/ is not) so that `npm ci` links the bin by name.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli-party.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('tre-party: sim/dist/cli-party.js is missing: run `npm run build` first');
  process.exit(1);
}
await import(cli.href);
