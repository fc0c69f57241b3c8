/**
 * Reads an SML meter through an IR head (typically 9600 8N1; the meter sends on its own, every
 * 1-4 s): files framed from the byte stream, parsed, checked; rejected ones are counted by reason,
 * never half-used. Each good file is a `readout` with the reader's clock time beside the meter's
 * own time (which SML meters rarely send). The port is reopened with backoff when it closes or
 * fails (`ReopeningPort`). The binding is injectable: the real one on a device, `@serialport/binding-mock` in tests.
 */
import { EventEmitter } from 'node:events';
import type { SerialPortStream } from '@serialport/stream';
import type { ReaderStats } from './meter-reader.js';
import { type ReaderClock, ReopeningPort } from './reopening-port.js';
import { parseSmlFile, type SmlReadout, type SmlRejection } from './sml-file.js';
import { SmlFramer } from './sml-transport.js';

export interface SmlReaderOptions {
  path: string;
  /** IR heads: 9600 (most meters), some 2400 or 19200; always 8N1. */
  baudRate?: number;
  binding: ConstructorParameters<typeof SerialPortStream>[0]['binding'];
  clock: ReaderClock & { now(): number };
}

export interface SmlReaderEvents {
  /** A good file, and when it arrived (the reader's clock, ms since epoch). */
  readout: [readout: SmlReadout, receivedAt: number];
  rejected: [reason: SmlRejection, detail: string];
  state: [state: 'open' | 'closed' | 'error', detail?: string];
}

export class SmlReader extends EventEmitter<SmlReaderEvents> {
  private framer = new SmlFramer();
  private readonly tally = { telegrams: 0, crcErrors: 0, rejected: 0, skippedLines: 0, truncated: 0 };
  private readonly serial: ReopeningPort;

  constructor(private readonly opts: SmlReaderOptions) {
    super();
    this.serial = new ReopeningPort(
      {
        binding: opts.binding,
        path: opts.path,
        baudRate: opts.baudRate ?? 9_600,
        dataBits: 8,
        parity: 'none',
      },
      opts.clock,
      {
        opening: () => {
          this.tally.truncated += this.framer.stats.truncated;
          this.framer = new SmlFramer();
        },
        data: (chunk) => this.onData(chunk),
        state: (state, detail) => this.emit('state', state, detail),
      },
    );
  }

  /** Files read, CRC failures (file or message), other rejections (incl. cut-off files), skipped entries. */
  get stats(): ReaderStats {
    const { telegrams, crcErrors, rejected, skippedLines, truncated } = this.tally;
    return {
      telegrams,
      crcErrors,
      rejected: rejected + truncated + this.framer.stats.truncated,
      skippedLines,
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
    for (const file of this.framer.push(chunk)) {
      const parsed = parseSmlFile(file);
      if (parsed.ok) {
        this.tally.telegrams++;
        this.tally.skippedLines += parsed.readout.skippedLines.length;
        this.emit('readout', parsed.readout, this.opts.clock.now());
      } else {
        if (parsed.reason === 'CRC_MISMATCH' || parsed.reason === 'MESSAGE_CRC_MISMATCH')
          this.tally.crcErrors++;
        else this.tally.rejected++;
        this.emit('rejected', parsed.reason, parsed.detail);
      }
    }
  }
}
