export * from './outbox.js';
export * from './tre-link.js';
