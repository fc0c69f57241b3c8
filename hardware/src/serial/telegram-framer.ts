/**
 * Finds telegrams in a serial byte stream: from `/` to the end of the line that carries `!` (and
 * the CRC, when there is one). Bytes before a `/` are noise and are counted; a telegram longer than
 * `maxBytes` or interrupted by a new `/` is dropped as truncated. Chunks may split anywhere.
 */
export class TelegramFramer {
  private buf = '';
  private inTelegram = false;
  readonly stats = { telegrams: 0, noiseBytes: 0, truncated: 0 };

  constructor(private readonly maxBytes = 16_384) {}

  /** Feeds a chunk; returns the complete telegrams it finished (latin1 text). */
  push(chunk: Uint8Array): string[] {
    const out: string[] = [];
    for (const ch of Buffer.from(chunk).toString('latin1')) {
      if (!this.inTelegram) {
        if (ch === '/') {
          this.inTelegram = true;
          this.buf = ch;
        } else this.stats.noiseBytes++;
        continue;
      }
      if (ch === '/' && !this.buf.includes('!')) {
        this.stats.truncated++; // a new telegram began before this one ended
        this.buf = ch;
        continue;
      }
      this.buf += ch;
      if (this.buf.length > this.maxBytes) {
        this.stats.truncated++;
        this.inTelegram = false;
        this.buf = '';
        continue;
      }
      if (ch === '\n' && this.buf.lastIndexOf('!') > this.buf.lastIndexOf('\n', this.buf.length - 2)) {
        out.push(this.buf);
        this.stats.telegrams++;
        this.inTelegram = false;
        this.buf = '';
      }
    }
    return out;
  }
}
