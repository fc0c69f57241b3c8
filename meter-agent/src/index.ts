/** @tre/meter-agent: the household agent, for the simulator's in-process households. */
export { Bidder } from './bidder.js';
export { HouseholdAgent } from './household-agent.js';
export { Outbox } from './outbox.js';
export { crlBeside, loadAttestationPolicy, readRegulatorCrl, tpmQuoteAttestor } from './tre-attestor.js';
export { type TreAttestor, TreLink, trustWithoutAttestation } from './tre-link.js';
