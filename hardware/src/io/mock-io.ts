/**
 * A johnny-five IO plugin that drives no hardware and records every pin write. It stands where a
 * Raspberry Pi's GPIO or a Firmata board cannot run (these machines have neither); the same
 * LoadSwitch code drives `raspi-io` or Firmata on a device.
 */
import { EventEmitter } from 'node:events';

export class MockIo extends EventEmitter {
  readonly name = 'mock-io';
  readonly isReady = true;
  readonly MODES = { INPUT: 0, OUTPUT: 1, ANALOG: 2, PWM: 3, SERVO: 4 } as const;
  readonly HIGH = 1;
  readonly LOW = 0;
  readonly pins = Array.from({ length: 64 }, () => ({
    supportedModes: [0, 1, 3],
    mode: 0,
    value: 0,
    report: 1,
    analogChannel: 127,
  }));
  readonly analogPins: number[] = [];
  /** Every digital write, in order: [pin, value]. */
  readonly writes: [number, number][] = [];

  pinMode(pin: number, mode: number): this {
    this.pins[pin]!.mode = mode;
    return this;
  }

  digitalWrite(pin: number, value: number): this {
    this.pins[pin]!.value = value;
    this.writes.push([pin, value]);
    return this;
  }

  analogWrite(pin: number, value: number): this {
    this.pins[pin]!.value = value;
    this.writes.push([pin, value]);
    return this;
  }

  digitalRead(_pin: number, _cb: (value: number) => void): void {}

  normalize(pin: number): number {
    return pin;
  }

  /** The last value written to a pin. */
  level(pin: number): number {
    return this.pins[pin]!.value;
  }
}
