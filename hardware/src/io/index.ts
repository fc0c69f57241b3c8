export { drivableActuator, LoadSwitch, parseActuator } from './load-switch.js';
export { MockIo } from './mock-io.js';
