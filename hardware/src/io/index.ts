export * from './load-switch.js';
export * from './mock-io.js';
