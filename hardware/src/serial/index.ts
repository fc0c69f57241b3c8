export * from './crc16.js';
export * from './dsmr-telegram.js';
export * from './iec62056-21.js';
export * from './interval-energy.js';
export * from './meter-reader.js';
export * from './system-binding.js';
export * from './telegram-framer.js';
export * from './virtual-meter-port.js';
