export * from './outbox.js';
export * from './tre-attestor.js';
export * from './tre-link.js';
