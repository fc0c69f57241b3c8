#!/usr/bin/env node
console.error('tre-bench: no benchmarks yet');
process.exitCode = 1;
