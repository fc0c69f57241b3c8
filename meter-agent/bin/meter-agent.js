#!/usr/bin/env node
// `meter-agent`: runs the built CLI. Committed (dist/ is not) so that `npm ci` links the bin by name.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('meter-agent: meter-agent/dist/cli.js is missing: run `npm run build` first');
  process.exit(1);
}
await import(cli.href);
