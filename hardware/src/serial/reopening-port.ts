/**
 * A meter's serial port kept open: opened on `start()`, reopened with backoff (0.5 s doubling to
 * 30 s) whenever it closes or fails (a cable unplugged, a USB head re-enumerated), until `stop()`.
 * The readers (DSMR, SML) own their framing; this owns the port.
 */
import { SerialPortStream } from '@serialport/stream';

export interface ReaderClock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface PortSettings {
  path: string;
  baudRate: number;
  dataBits: 7 | 8;
  parity: 'none' | 'even';
  binding: ConstructorParameters<typeof SerialPortStream>[0]['binding'];
}

export interface ReopeningPortHandlers {
  /** A new connection is being opened (framing starts afresh). */
  opening(): void;
  data(chunk: Buffer): void;
  state(state: 'open' | 'closed' | 'error', detail?: string): void;
}

export class ReopeningPort {
  private port: SerialPortStream | undefined;
  private retry: unknown;
  private attempt = 0;
  private stopped = true;

  constructor(
    private readonly settings: PortSettings,
    private readonly clock: ReaderClock,
    private readonly on: ReopeningPortHandlers,
  ) {}

  /** The open serial stream (for virtual ports that play bytes into it). */
  get stream(): SerialPortStream | undefined {
    return this.port;
  }

  start(): void {
    this.stopped = false;
    this.open();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) this.clock.clearTimeout(this.retry);
    const port = this.port;
    if (port?.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
  }

  private open(): void {
    if (this.stopped) return;
    const port = new SerialPortStream({ ...this.settings, stopBits: 1, autoOpen: false });
    this.port = port;
    this.on.opening();
    port.on('data', (chunk: Buffer) => this.on.data(chunk));
    port.on('close', () => this.reopenLater('closed'));
    port.on('error', (err: Error) => this.reopenLater('error', err.message));
    port.open((err) => {
      if (err) return this.reopenLater('error', err.message);
      this.attempt = 0;
      this.on.state('open');
    });
  }

  private reopenLater(state: 'closed' | 'error', detail?: string): void {
    this.on.state(state, detail);
    if (this.stopped || this.retry) return;
    const delay = Math.min(30_000, 500 * 2 ** Math.min(this.attempt++, 6));
    this.retry = this.clock.setTimeout(() => {
      this.retry = undefined;
      this.open();
    }, delay);
  }
}
