#!/usr/bin/env node
import { openProcessScope } from '@tre/hardware';
import { main } from './cli-main.js';

// Children and temporary files go with the command, on completion and on SIGINT/SIGTERM.
const scope = openProcessScope('tre-bench');
try {
  process.exitCode = await main(process.argv);
} finally {
  await scope.close();
}
