export { crc16, crc16X25 } from './crc16.js';
export {
  type DsmrTelegram,
  dsmrSnapshot,
  formatDsmrTelegram,
  type MbusChannel,
  parseDsmrTelegram,
  type TelegramRejection,
} from './dsmr-telegram.js';
export {
  acknowledge,
  formatModeCDataBlock,
  type ModeCReadout,
  modeCSnapshot,
  parseIdentification,
  parseModeCDataBlock,
  SIGN_ON,
} from './iec62056-21.js';
export { IntervalAccumulator, type IntervalRecord, type RegisterReading } from './interval-energy.js';
export { MeterReader, type ReaderClock, type ReaderStats } from './meter-reader.js';
export {
  type MbusKind,
  type MbusReading,
  type MeterSnapshot,
  mbusKind,
  type PeakSnapshot,
  type Phase,
  type PhaseValues,
} from './meter-snapshot.js';
export { ModeCReader } from './mode-c-reader.js';
export {
  formatSmlFile,
  type ParsedSmlFile,
  parseSmlFile,
  SML_UNIT,
  type SmlEntryInput,
  type SmlReadout,
  type SmlRejection,
  smlSnapshot,
} from './sml-file.js';
export { SmlReader } from './sml-reader.js';
export { decodeSml, encodeSml, SmlDecodeError, type SmlValue, sml } from './sml-tlv.js';
export { SmlFramer, unwrapSmlFile, wrapSmlFile } from './sml-transport.js';
export { systemSerialBinding } from './system-binding.js';
export { TelegramFramer } from './telegram-framer.js';
export { openVirtualMeterPort, type VirtualMeterPort } from './virtual-meter-port.js';
