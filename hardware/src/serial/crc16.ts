/** CRC-16/ARC (polynomial 0x8005 reflected = 0xA001, initial 0, no final XOR), as DSMR 4+ uses. */
export function crc16(data: Uint8Array): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

/**
 * CRC-16/X-25 (polynomial 0x1021 reflected = 0x8408, initial 0xFFFF, final XOR 0xFFFF), as SML
 * uses for its transport frame and for each message; sent low byte first.
 */
export function crc16X25(data: Uint8Array): number {
  let crc = 0xffff;
  for (const byte of data) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0x8408 : crc >>> 1;
  }
  return crc ^ 0xffff;
}
