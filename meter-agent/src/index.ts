export * from './agent-config.js';
export * from './household-agent.js';
export * from './meter-replay.js';
export * from './outbox.js';
export * from './tre-attestor.js';
export * from './tre-link.js';
