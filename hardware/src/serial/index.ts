export { crc16 } from './crc16.js';
export { type DsmrTelegram, formatDsmrTelegram, parseDsmrTelegram } from './dsmr-telegram.js';
export {
  acknowledge,
  formatModeCDataBlock,
  parseIdentification,
  parseModeCDataBlock,
  SIGN_ON,
} from './iec62056-21.js';
export { IntervalAccumulator, type IntervalRecord, type RegisterReading } from './interval-energy.js';
export { MeterReader } from './meter-reader.js';
export { ModeCReader } from './mode-c-reader.js';
export { systemSerialBinding } from './system-binding.js';
export { TelegramFramer } from './telegram-framer.js';
export { openVirtualMeterPort, type VirtualMeterPort } from './virtual-meter-port.js';
