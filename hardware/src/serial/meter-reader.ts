/**
 * Reads a meter's serial port: telegrams framed from the byte stream, parsed, checked; rejected
 * ones are counted by reason, never half-used. The port is reopened with backoff when it closes or
 * fails (cable unplugged). The binding is injectable: the real one on a device,
 * `@serialport/binding-mock` in tests fed real telegram bytes.
 */
import { EventEmitter } from 'node:events';
import { SerialPortStream } from '@serialport/stream';
import { type DsmrTelegram, parseDsmrTelegram, type TelegramRejection } from './dsmr-telegram.js';
import { TelegramFramer } from './telegram-framer.js';

export interface ReaderClock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface MeterReaderOptions {
  path: string;
  /** DSMR 4/5: 115200 8N1; DSMR 2.2/3: 9600 7E1. */
  baudRate?: number;
  dataBits?: 7 | 8;
  parity?: 'none' | 'even';
  binding: ConstructorParameters<typeof SerialPortStream>[0]['binding'];
  clock: ReaderClock;
}

export interface MeterReaderEvents {
  telegram: [DsmrTelegram];
  rejected: [TelegramRejection, string];
  state: ['open' | 'closed' | 'error', string?];
}

export class MeterReader extends EventEmitter<MeterReaderEvents> {
  private port: SerialPortStream | undefined;
  private framer = new TelegramFramer();
  private retry: unknown;
  private attempt = 0;
  private stopped = false;
  readonly counts = { telegrams: 0, rejected: {} as Partial<Record<TelegramRejection, number>> };

  constructor(private readonly opts: MeterReaderOptions) {
    super();
  }

  /** The open serial stream (for virtual ports that play bytes into it). */
  get stream(): SerialPortStream | undefined {
    return this.port;
  }

  start(): void {
    this.stopped = false;
    this.open();
  }

  private open(): void {
    if (this.stopped) return;
    const o = this.opts;
    const port = new SerialPortStream({
      binding: o.binding,
      path: o.path,
      baudRate: o.baudRate ?? 115_200,
      dataBits: o.dataBits ?? 8,
      parity: o.parity ?? 'none',
      autoOpen: false,
    });
    this.port = port;
    this.framer = new TelegramFramer();
    port.on('data', (chunk: Buffer) => this.onData(chunk));
    port.on('close', () => this.reopenLater('closed'));
    port.on('error', (err: Error) => this.reopenLater('error', err.message));
    port.open((err) => {
      if (err) return this.reopenLater('error', err.message);
      this.attempt = 0;
      this.emit('state', 'open');
    });
  }

  private reopenLater(state: 'closed' | 'error', detail?: string): void {
    this.emit('state', state, detail);
    if (this.stopped || this.retry) return;
    const delay = Math.min(30_000, 500 * 2 ** Math.min(this.attempt++, 6));
    this.retry = this.opts.clock.setTimeout(() => {
      this.retry = undefined;
      this.open();
    }, delay);
  }

  private onData(chunk: Buffer): void {
    for (const text of this.framer.push(chunk)) {
      const parsed = parseDsmrTelegram(text);
      if (parsed.ok) {
        this.counts.telegrams++;
        this.emit('telegram', parsed.telegram);
      } else {
        this.counts.rejected[parsed.reason] = (this.counts.rejected[parsed.reason] ?? 0) + 1;
        this.emit('rejected', parsed.reason, parsed.detail);
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) this.opts.clock.clearTimeout(this.retry);
    const port = this.port;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }
}
