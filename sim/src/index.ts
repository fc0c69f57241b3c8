export * from './households/load-profile.js';
export * from './simulation/simulation.js';
