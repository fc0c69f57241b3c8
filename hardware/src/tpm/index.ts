export * from './swtpm.js';
export * from './tpm.js';
export * from './tpm-error.js';
