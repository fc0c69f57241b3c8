/** How a benchmark reports: a plain table, optional JSON, and the machine it ran on. */
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';

export interface BenchResult {
  name: string;
  /** What was measured and against what baseline, in one sentence. */
  description: string;
  columns: string[];
  rows: (string | number)[][];
  /** Free-form findings, e.g. the ratio against the baseline. */
  notes: string[];
  /** The headline figures as numbers, units in the names (e.g. `ratio`, `batchedPerSecond`). */
  summary?: Record<string, number>;
}

/**
 * A column header as a JSON field name with its unit: `msg/s` -> `msgPerSecond`, `p50 ms` ->
 * `p50Ms`, `RSS MiB` -> `rssMiB`, `deadline -> pseudo-bids ms` -> `deadlineToPseudoBidsMs`.
 */
export function fieldName(column: string): string {
  const words = column
    .replaceAll('->', ' to ')
    .replaceAll('/s', ' per second')
    .replaceAll('/', ' per ')
    .replaceAll('%', ' percent')
    .replaceAll('+', ' and ')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean);
  return words
    .map((w, i) => {
      if (i === 0) return /^[A-Z]+$/.test(w) ? w.toLowerCase() : w[0]!.toLowerCase() + w.slice(1);
      return w[0]!.toUpperCase() + w.slice(1);
    })
    .join('');
}

/** The result for machines: one record per row, numbers as numbers, units in the field names. */
export function jsonOf(result: BenchResult, date = new Date()) {
  const fields = result.columns.map(fieldName);
  return {
    name: result.name,
    description: result.description,
    machine: machine(),
    date: date.toISOString(),
    records: result.rows.map((row) => Object.fromEntries(fields.map((f, i) => [f, row[i]]))),
    summary: result.summary ?? {},
    notes: result.notes,
  };
}

export function machine(): string {
  const cpu = cpus();
  return `${cpu.length} x ${cpu[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${process.platform}/${process.arch}`;
}

/** A memory figure of a process from /proc/<pid>/status, in KiB: `VmRSS`, `RssAnon`, `RssFile`... */
export function procStatusKiB(pid: number | 'self', field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function formatTable(result: BenchResult): string {
  const cells = [
    result.columns,
    ...result.rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c) : c))),
  ];
  const widths = result.columns.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? '').length)));
  const line = (r: (string | number)[]) => `| ${r.map((c, i) => String(c).padEnd(widths[i]!)).join(' | ')} |`;
  return [
    `${result.name}: ${result.description}`,
    `machine: ${machine()}, ${new Date().toISOString().slice(0, 10)}`,
    '',
    line(cells[0]!),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...cells.slice(1).map(line),
    '',
    ...result.notes,
  ].join('\n');
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return n.toLocaleString('en-US');
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toPrecision(3);
}
