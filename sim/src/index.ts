/** @tre/sim: the whole system on one machine, for the benchmarks. */
export { householdProfile, powerW } from './households/load-profile.js';
export { Simulation } from './simulation/simulation.js';
