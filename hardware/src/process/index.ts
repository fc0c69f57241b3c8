export {
  memoryTmpdir,
  openProcessScope,
  type ProcessScope,
  type ProcessScopeOptions,
} from './process-scope.js';
export { processesUnder } from './processes-under.js';
export { waitForListening } from './wait-for-listening.js';
