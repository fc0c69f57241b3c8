/** @tre/hardware: the TPM, the meter's serial port and the relay IO, each behind a small interface. */
export { drivableActuator, LoadSwitch, MockIo } from './io/index.js';
export {
  memoryTmpdir,
  openProcessScope,
  type ProcessScope,
  type ProcessScopeOptions,
  processesUnder,
  waitForListening,
} from './process/index.js';
export {
  type DsmrTelegram,
  dsmrSnapshot,
  formatDsmrTelegram,
  formatSmlFile,
  IntervalAccumulator,
  type IntervalRecord,
  type MbusKind,
  type MbusReading,
  MeterReader,
  type MeterSnapshot,
  ModeCReader,
  type ModeCReadout,
  modeCSnapshot,
  openVirtualMeterPort,
  type ParsedSmlFile,
  parseDsmrTelegram,
  parseSmlFile,
  type ReaderStats,
  type RegisterReading,
  SmlFramer,
  SmlReader,
  type SmlReadout,
  smlSnapshot,
  systemSerialBinding,
  TelegramFramer,
  type VirtualMeterPort,
} from './serial/index.js';
export { type Swtpm, startSwtpm, Tpm, TpmError } from './tpm/index.js';
