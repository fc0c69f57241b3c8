/**
 * @tre/bench: no workspace imports it; the benchmarks run through `tre-bench`. What is named here
 * is the one benchmark meant to be run from code, with its result shape.
 */
export { type IngestOptions, runIngest } from './ingest.js';
export type { BenchResult } from './report.js';
