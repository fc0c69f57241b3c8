/**
 * Parse YAML (or JSON, which is YAML 1.2) text and check it with a zod schema, turning every YAML
 * syntax error and every schema issue into one sentence that names the file, line and column and
 * says what would be valid: "maxReductionWh.perEvent must be a positive integer, got -5 at
 * policy.yaml:12:5".
 */
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import type { z } from 'zod';

/** One problem in an input file, located at a 1-based line and column. */
export interface SourceProblem {
  file: string;
  line: number;
  column: number;
  /** Dotted path of the value, e.g. `loads[0].typicalPowerW`; empty for the whole file. */
  path: string;
  /** The full sentence, ending with `at file:line:column`. */
  message: string;
}

export type SourceCheck<T> = { ok: true; value: T } | { ok: false; problems: SourceProblem[] };

type PathKey = PropertyKey;

export function formatPath(path: readonly PathKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out;
}

function describe(value: unknown): string {
  if (value === null) return 'an empty value';
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

function valueAt(data: unknown, path: readonly PathKey[]): unknown {
  let cur = data;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/** Edit distance, for "did you mean" on unknown keys. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(
        up + 1,
        row[j - 1]! + 1,
        diag + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1),
      );
      diag = up;
    }
  }
  return row[b.length]!;
}

function closest(key: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const c of candidates) {
    const d = distance(key, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

class Located {
  readonly lines = new LineCounter();
  readonly doc;

  constructor(
    readonly file: string,
    text: string,
  ) {
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, uniqueKeys: true });
  }

  at(offset: number): { line: number; column: number } {
    const pos = this.lines.linePos(offset);
    return { line: pos.line, column: pos.col };
  }

  /** The offset of the value at `path`, or of the deepest existing ancestor (`exact` false). */
  offsetOf(path: readonly PathKey[], key?: string): { offset: number; exact: boolean } {
    let node: unknown = this.doc.contents;
    let offset = (node as Node | null)?.range?.[0] ?? 0;
    const segments = key === undefined ? path : [...path, key];
    for (const [i, seg] of segments.entries()) {
      const isKey = key !== undefined && i === segments.length - 1;
      if (isMap(node)) {
        const pair = node.items.find(
          (p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg),
        );
        if (!pair) return { offset, exact: false };
        const keyNode = pair.key as Node;
        if (isKey) return { offset: keyNode.range?.[0] ?? offset, exact: true };
        const valueNode = pair.value as Node | null;
        offset = valueNode?.range?.[0] ?? keyNode.range?.[0] ?? offset;
        node = valueNode;
      } else if (isSeq(node) && typeof seg === 'number') {
        const item = node.items[seg] as Node | undefined;
        if (!item) return { offset, exact: false };
        offset = item.range?.[0] ?? offset;
        node = item;
      } else {
        return { offset, exact: false };
      }
    }
    return { offset, exact: true };
  }

  problem(path: readonly PathKey[], offset: number, sentence: string): SourceProblem {
    const { line, column } = this.at(offset);
    return {
      file: this.file,
      line,
      column,
      path: formatPath(path),
      message: `${sentence} at ${this.file}:${line}:${column}`,
    };
  }
}

function issueProblems(src: Located, data: unknown, issue: z.core.$ZodIssue): SourceProblem[] {
  const path = issue.path;
  const name = formatPath(path) || 'the file';
  if (issue.code === 'unrecognized_keys') {
    const valid = issue.message.startsWith('valid keys: ') ? issue.message.slice(12).split(', ') : [];
    return issue.keys.map((key) => {
      const { offset } = src.offsetOf(path, key);
      const guess = closest(key, valid);
      const where = path.length ? ` in ${formatPath(path)}` : '';
      const hint = guess ? ` (did you mean "${guess}"?)` : '';
      return src.problem(
        [...path, key],
        offset,
        `unknown key "${key}"${where}${hint}; valid keys are ${valid.join(', ')}`,
      );
    });
  }
  const value = valueAt(data, path);
  const { offset, exact } = src.offsetOf(path);
  let what = issue.message;
  if (issue.code === 'invalid_union' && 'options' in issue && Array.isArray(issue.options)) {
    what = `must be one of ${issue.options.map(String).join(', ')}`;
  } else if (issue.code === 'invalid_value') {
    what = `must be ${issue.values.length === 1 ? '' : 'one of '}${issue.values.map(String).join(', ')}`;
  } else if (!what.startsWith('must ')) {
    if (issue.code === 'invalid_type')
      what = `must be ${issue.expected === 'object' ? 'a mapping' : issue.expected}`;
  }
  if (value === undefined || !exact) return [src.problem(path, offset, `${name} is missing: it ${what}`)];
  if (issue.code === 'custom' && value !== null && typeof value === 'object')
    return [src.problem(path, offset, `${name} ${what}`)];
  const cut = what.indexOf('; ');
  const got = `, got ${describe(value)}`;
  const sentence = cut < 0 ? `${what}${got}` : `${what.slice(0, cut)}${got}${what.slice(cut)}`;
  return [src.problem(path, offset, `${name} ${sentence}`)];
}

/** Parse `text` (YAML or JSON) and check it against `schema`, locating every problem in `file`. */
export function checkSource<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
): SourceCheck<z.output<S>> {
  const src = new Located(file, text);
  if (src.doc.errors.length > 0) {
    return {
      ok: false,
      // Only the first: the parser's later errors are mostly consequences of it.
      problems: src.doc.errors
        .slice(0, 1)
        .map((e) => src.problem([], e.pos[0], `YAML syntax error: ${e.message}`)),
    };
  }
  const data: unknown = src.doc.toJS();
  if (data === null || data === undefined) {
    return {
      ok: false,
      problems: [src.problem([], 0, 'the file is empty: it must be a mapping (key: value lines)')],
    };
  }
  const result = schema.safeParse(data);
  if (result.success) return { ok: true, value: result.data };
  const problems = result.error.issues.flatMap((issue) => issueProblems(src, data, issue));
  problems.sort((a, b) => a.line - b.line || a.column - b.column);
  return { ok: false, problems };
}
