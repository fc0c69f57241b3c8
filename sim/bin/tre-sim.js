#!/usr/bin/env node
// `tre-sim`: runs the built CLI. Committed (dist/ is not) so that `npm ci` links the bin by name.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('tre-sim: sim/dist/cli.js is missing: run `npm run build` first');
  process.exit(1);
}
await import(cli.href);
