/**
 * A virtual serial port for simulated meters: the real serialport stream and MeterReader over
 * `@serialport/binding-mock`, fed the bytes of real DSMR telegrams. Used by the simulator and the
 * tests; on a device the system binding takes its place.
 */
import { MockBinding } from '@serialport/binding-mock';
import type { ReaderClock } from './meter-reader.js';
import { MeterReader } from './meter-reader.js';

export interface VirtualMeterPort {
  reader: MeterReader;
  /** Plays bytes into the port as if the meter had sent them. */
  emit(bytes: Buffer): void;
}

export async function openVirtualMeterPort(path: string, clock: ReaderClock): Promise<VirtualMeterPort> {
  MockBinding.createPort(path, { echo: false, record: false });
  const reader = new MeterReader({ path, binding: MockBinding as never, clock });
  const opened = new Promise<void>((resolve) => reader.once('state', () => resolve()));
  reader.start();
  await opened;
  return {
    reader,
    emit: (bytes) =>
      (reader.stream as unknown as { port: { emitData(b: Buffer): void } }).port.emitData(bytes),
  };
}
