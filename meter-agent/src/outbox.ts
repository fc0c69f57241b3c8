/**
 * The agent's durable outbox: an append-only journal with fsync, so a TRE outage, a reboot or a
 * Wi-Fi drop loses nothing (no SQLite needed on the Pi). Each line is JSON:
 *   {"op":"add","key":K,"topic":T,"payload":P}   queued
 *   {"op":"done","key":K}                        settled: accepted (its PUBACK, or an accepted receipt)
 *   {"op":"done","key":K,"refused":R}            settled: refused for good with reason R (its receipt)
 * Keys are idempotency keys (`reading:<intervalStart>`, `bid:<bidId>`): adding a pending key again
 * is a no-op. On open, the journal is replayed (a torn last line from a crash is ignored); it is
 * compacted (rewritten with only pending entries, fsync, rename) when mostly settled.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export interface OutboxEntry {
  key: string;
  topic: string;
  payload: string;
}

type JournalLine = ({ op: 'add' } & OutboxEntry) | { op: 'done'; key: string; refused?: string };

export class Outbox {
  private readonly pending = new Map<string, OutboxEntry>();
  private fd: number;
  private settledSinceCompaction = 0;

  constructor(
    readonly path: string,
    private readonly compactAfter = 1_000,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    for (const line of readJournal(path)) {
      if (line.op === 'add')
        this.pending.set(line.key, { key: line.key, topic: line.topic, payload: line.payload });
      else this.pending.delete(line.key);
    }
    this.fd = openSync(path, 'a', 0o600);
    this.compact();
  }

  get depth(): number {
    return this.pending.size;
  }

  /** Pending entries in the order they were added. */
  entries(): OutboxEntry[] {
    return [...this.pending.values()];
  }

  has(key: string): boolean {
    return this.pending.has(key);
  }

  /** Queues an entry durably (fsync before returning). Returns false if the key is already pending. */
  add(entry: OutboxEntry): boolean {
    if (this.pending.has(entry.key)) return false;
    this.append({ op: 'add', ...entry });
    this.pending.set(entry.key, entry);
    return true;
  }

  /** Marks an entry settled: accepted (a duplicate included), or refused for good with `refusedFor`. */
  settle(key: string, refusedFor?: string): void {
    if (!this.pending.delete(key)) return;
    this.append(refusedFor ? { op: 'done', key, refused: refusedFor } : { op: 'done', key });
    if (++this.settledSinceCompaction >= this.compactAfter) this.compact();
  }

  close(): void {
    closeSync(this.fd);
  }

  private append(line: JournalLine): void {
    writeSync(this.fd, `${JSON.stringify(line)}\n`);
    fsyncSync(this.fd);
  }

  private compact(): void {
    const tmp = `${this.path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    for (const e of this.pending.values()) writeSync(fd, `${JSON.stringify({ op: 'add', ...e })}\n`);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, this.path);
    closeSync(this.fd);
    this.fd = openSync(this.path, 'a', 0o600);
    this.settledSinceCompaction = 0;
  }
}

function readJournal(path: string): JournalLine[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const lines: JournalLine[] = [];
  for (const raw of text.split('\n')) {
    if (!raw) continue;
    try {
      lines.push(JSON.parse(raw) as JournalLine);
    } catch {
      // A line torn by a crash mid-write: it was never fsynced, so it was never acknowledged.
    }
  }
  return lines;
}
