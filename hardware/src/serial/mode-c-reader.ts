/**
 * Reads an IEC 62056-21 meter through an optical head, mode C: every `pollMs` it signs on at 300
 * baud 7E1, reads the meter's identification, acknowledges at the baud rate the meter offers,
 * switches, reads the data block (BCC checked) and switches back. Each good block is a `readout`
 * (registers at the reader's clock time, as these meters rarely send one); a failed or silent
 * exchange is `rejected` with a reason and retried at the next poll. The binding is injectable.
 */
import { EventEmitter } from 'node:events';
import { SerialPortStream } from '@serialport/stream';
import {
  acknowledge,
  type ModeCReadout,
  parseIdentification,
  parseModeCDataBlock,
  SIGN_ON,
} from './iec62056-21.js';
import type { ReaderClock, ReaderStats } from './meter-reader.js';

export interface ModeCReaderOptions {
  path: string;
  binding: ConstructorParameters<typeof SerialPortStream>[0]['binding'];
  clock: ReaderClock & { now(): number };
  /** Between readouts (default 60 s). */
  pollMs?: number;
  /** For the identification and for the data block (default 5 s and 30 s). */
  timeouts?: { identificationMs: number; blockMs: number };
}

export interface ModeCReaderEvents {
  readout: [ModeCReadout & { at: number }];
  rejected: [reason: string, detail?: string];
  state: [state: 'open' | 'closed' | 'error', detail?: string];
}

export class ModeCReader extends EventEmitter<ModeCReaderEvents> {
  private port: SerialPortStream | undefined;
  private received = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private timer: unknown;
  private busy = false;
  private stopped = false;
  readonly counts = { readouts: 0, rejected: {} as Record<string, number> };

  constructor(private readonly opts: ModeCReaderOptions) {
    super();
  }

  /** Readouts, BCC failures, other failed exchanges (timeouts, bad identification ...). */
  get stats(): ReaderStats {
    const { BCC_MISMATCH = 0, ...other } = this.counts.rejected;
    return {
      telegrams: this.counts.readouts,
      crcErrors: BCC_MISMATCH,
      rejected: Object.values(other).reduce((a, n) => a + n, 0),
      skippedLines: 0,
    };
  }

  start(): void {
    this.stopped = false;
    const port = new SerialPortStream({
      binding: this.opts.binding,
      path: this.opts.path,
      baudRate: 300,
      dataBits: 7,
      parity: 'even',
      stopBits: 1,
      autoOpen: false,
    });
    this.port = port;
    port.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]).subarray(-16_384);
      this.waiter?.();
    });
    port.on('error', (err: Error) => this.emit('state', 'error', err.message));
    port.open((err) => {
      if (err) return this.emit('state', 'error', err.message);
      this.emit('state', 'open');
      void this.poll();
    });
  }

  /** One readout now (and the next after `pollMs`). */
  async poll(): Promise<void> {
    if (this.busy || this.stopped || !this.port?.isOpen) return;
    this.busy = true;
    try {
      const readout = await this.exchange(this.port);
      this.counts.readouts++;
      this.emit('readout', { ...readout, at: this.opts.clock.now() });
    } catch (err) {
      const [reason, detail] = (err as Error).message.split(': ', 2) as [string, string | undefined];
      this.counts.rejected[reason] = (this.counts.rejected[reason] ?? 0) + 1;
      this.emit('rejected', reason, detail);
    } finally {
      this.busy = false;
      if (!this.stopped)
        this.timer = this.opts.clock.setTimeout(() => void this.poll(), this.opts.pollMs ?? 60_000);
    }
  }

  private async exchange(port: SerialPortStream): Promise<ModeCReadout> {
    const t = this.opts.timeouts ?? { identificationMs: 5_000, blockMs: 30_000 };
    await this.setBaud(port, 300);
    this.received = Buffer.alloc(0);
    port.write(SIGN_ON);
    const line = await this.until(
      (b) => {
        const end = b.indexOf('\r\n');
        const start = b.indexOf('/');
        return start >= 0 && end > start ? b.subarray(start, end).toString('latin1') : undefined;
      },
      t.identificationMs,
      'NO_IDENTIFICATION',
    );
    const id = parseIdentification(line);
    if (!id) throw new Error(`BAD_IDENTIFICATION: ${JSON.stringify(line.slice(0, 40))}`);
    this.received = Buffer.alloc(0);
    const ack = acknowledge(id.baudCode);
    await new Promise<void>((resolve) => port.write(ack, () => port.drain(() => resolve())));
    // Changing the baud rate flushes the port's queues (serialport's update: tcflush TCIOFLUSH), so
    // switch only once the ACK is surely on the line: its transmission time at 300 baud (10 bits a
    // character) and a margin, still inside the meter's reaction time (200 ms-1.5 s) after it.
    // Without the wait a driver (or a pseudo-terminal under load) could drop the ACK unsent.
    await new Promise<void>((resolve) =>
      this.opts.clock.setTimeout(resolve, Math.ceil((ack.length * 10 * 1000) / 300) + 50),
    );
    await this.setBaud(port, id.baudRate);
    const block = await this.until(
      (b) => {
        const etx = b.indexOf(0x03, b.indexOf(0x02) + 1);
        return b.indexOf(0x02) >= 0 && etx > 0 && b.length > etx + 1 ? b.subarray(0, etx + 2) : undefined;
      },
      t.blockMs,
      'NO_DATA_BLOCK',
    );
    await this.setBaud(port, 300);
    const parsed = parseModeCDataBlock(block);
    if (!parsed.ok) throw new Error(`${parsed.reason}: ${parsed.detail}`);
    return parsed.readout;
  }

  private setBaud(port: SerialPortStream, baudRate: number): Promise<void> {
    return new Promise((resolve, reject) =>
      port.update({ baudRate }, (err) => (err ? reject(new Error(`BAUD: ${err.message}`)) : resolve())),
    );
  }

  private until<T>(found: (b: Buffer) => T | undefined, ms: number, reason: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        const value = found(this.received);
        if (value === undefined) return;
        finish();
        resolve(value);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${reason}: nothing within ${ms} ms`));
      }, ms);
      const finish = () => {
        clearTimeout(timer);
        this.waiter = undefined;
      };
      this.waiter = check;
      check();
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.opts.clock.clearTimeout(this.timer);
    this.waiter = undefined;
    const port = this.port;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }
}
