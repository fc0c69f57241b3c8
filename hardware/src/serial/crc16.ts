/** CRC-16/ARC (polynomial 0x8005 reflected = 0xA001, initial 0, no final XOR), as DSMR 4+ uses. */
export function crc16(data: Uint8Array): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}
