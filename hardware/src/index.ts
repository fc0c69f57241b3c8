export * from './io/index.js';
export * from './process/index.js';
export * from './serial/index.js';
export * from './tpm/index.js';
