export * from './ingest.js';
export * from './report.js';
