/**
 * Reads a meter's serial port: telegrams framed from the byte stream, parsed, checked; rejected
 * ones are counted by reason, never half-used. The port is reopened with backoff when it closes or
 * fails (cable unplugged). The binding is injectable: the real one on a device,
 * `@serialport/binding-mock` in tests fed real telegram bytes.
 */
import { EventEmitter } from 'node:events';
import type { SerialPortStream } from '@serialport/stream';
import { type DsmrTelegram, parseDsmrTelegram, type TelegramRejection } from './dsmr-telegram.js';
import { type ReaderClock, ReopeningPort } from './reopening-port.js';
import { TelegramFramer } from './telegram-framer.js';

export type { ReaderClock } from './reopening-port.js';

/** What a reader has seen since it started, for metrics. */
export interface ReaderStats {
  /** Telegrams (SML files, mode C readouts) accepted. */
  telegrams: number;
  /** Rejected for a CRC (or BCC) mismatch. */
  crcErrors: number;
  /** Rejected for any other reason, including telegrams cut off in the byte stream. */
  rejected: number;
  /** Malformed lines skipped in accepted telegrams. */
  skippedLines: number;
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
  private framer = new TelegramFramer();
  readonly counts = { telegrams: 0, rejected: {} as Partial<Record<TelegramRejection, number>> };
  private skippedLines = 0;
  /** Cut-off telegrams counted by the framers of earlier connections. */
  private truncated = 0;
  private readonly serial: ReopeningPort;

  constructor(opts: MeterReaderOptions) {
    super();
    this.serial = new ReopeningPort(
      {
        binding: opts.binding,
        path: opts.path,
        baudRate: opts.baudRate ?? 115_200,
        dataBits: opts.dataBits ?? 8,
        parity: opts.parity ?? 'none',
      },
      opts.clock,
      {
        opening: () => {
          this.truncated += this.framer.stats.truncated;
          this.framer = new TelegramFramer();
        },
        data: (chunk) => this.onData(chunk),
        state: (state, detail) => this.emit('state', state, detail),
      },
    );
  }

  get stats(): ReaderStats {
    const { CRC_MISMATCH = 0, ...other } = this.counts.rejected;
    const rejected = Object.values(other).reduce((a, n) => a + n, 0);
    return {
      telegrams: this.counts.telegrams,
      crcErrors: CRC_MISMATCH,
      rejected: rejected + this.truncated + this.framer.stats.truncated,
      skippedLines: this.skippedLines,
    };
  }

  /** The open serial stream (for virtual ports that play bytes into it). */
  get stream(): SerialPortStream | undefined {
    return this.serial.stream;
  }

  start(): void {
    this.serial.start();
  }

  stop(): Promise<void> {
    return this.serial.stop();
  }

  private onData(chunk: Buffer): void {
    for (const text of this.framer.push(chunk)) {
      const parsed = parseDsmrTelegram(text);
      if (parsed.ok) {
        this.counts.telegrams++;
        this.skippedLines += parsed.telegram.skippedLines.length;
        this.emit('telegram', parsed.telegram);
      } else {
        this.counts.rejected[parsed.reason] = (this.counts.rejected[parsed.reason] ?? 0) + 1;
        this.emit('rejected', parsed.reason, parsed.detail);
      }
    }
  }
}
