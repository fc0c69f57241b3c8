/** @tre/hardware: the TPM, the meter's serial port and the relay IO, each behind a small interface. */
export { drivableActuator, LoadSwitch, MockIo } from './io/index.js';
export {
  memoryTmpdir,
  openProcessScope,
  type ProcessScope,
  type ProcessScopeOptions,
  waitForListening,
} from './process/index.js';
export {
  type DsmrTelegram,
  formatDsmrTelegram,
  IntervalAccumulator,
  type IntervalRecord,
  MeterReader,
  ModeCReader,
  openVirtualMeterPort,
  parseDsmrTelegram,
  type RegisterReading,
  systemSerialBinding,
  TelegramFramer,
  type VirtualMeterPort,
} from './serial/index.js';
export { type Swtpm, startSwtpm, Tpm, TpmError } from './tpm/index.js';
