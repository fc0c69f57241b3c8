export {
  memoryTmpdir,
  openProcessScope,
  type ProcessScope,
  type ProcessScopeOptions,
} from './process-scope.js';
export { processesUnder } from './processes-under.js';
export {
  ALREADY_STOPPING,
  type SignalSource,
  type StopSignals,
  type StopSignalsOptions,
  takeStopSignals,
} from './stop-signals.js';
export { waitForListening } from './wait-for-listening.js';
