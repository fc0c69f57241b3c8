/**
 * `meter-agent image --batch devices.csv`: one row per device. A header row names the columns
 * (any order); an empty cell takes the command line's value. Paths are relative to the CSV's
 * directory. Pure: parsing only.
 */

/** The columns, as the header names them. */
export const BATCH_COLUMNS = [
  'meter',
  'hostname',
  'agent_config',
  'policy',
  'key',
  'cert',
  'token_file',
  'wifi_ssid',
  'wifi_psk_file',
  'wifi_country',
  'ssh_key',
  'time_zone',
] as const;
export type BatchColumn = (typeof BATCH_COLUMNS)[number];
export type BatchRow = { line: number } & Partial<Record<BatchColumn, string>> & { meter: string };

export class BatchError extends Error {
  override readonly name = 'BatchError';
  readonly code = 'BATCH_INVALID';
}

/** RFC 4180 fields: commas, double quotes ("" inside quotes), CRLF or LF; `#` lines are comments. */
function records(text: string, file: string): { line: number; fields: string[] }[] {
  const out: { line: number; fields: string[] }[] = [];
  let fields: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let start = 1;
  let fresh = true;
  const end = () => {
    fields.push(field);
    if (!(fields.length === 1 && fields[0] === '') && !fields[0]!.startsWith('#'))
      out.push({ line: start, fields: fields.map((f) => f.trim()) });
    fields = [];
    field = '';
    fresh = true;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (fresh) {
      start = line;
      fresh = false;
    }
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else {
        if (c === '\n') line++;
        field += c;
      }
    } else if (c === '"' && field.trim() === '') {
      field = '';
      quoted = true;
    } else if (c === ',') {
      fields.push(field);
      field = '';
    } else if (c === '\n') {
      end();
      line++;
    } else if (c !== '\r') field += c;
  }
  if (quoted) throw new BatchError(`${file}:${start}: a quoted field is not closed`);
  if (!fresh) end();
  return out;
}

export function parseBatchCsv(text: string, file = 'devices.csv'): BatchRow[] {
  const [header, ...rows] = records(text, file);
  if (!header)
    throw new BatchError(`${file}: empty; the first line names the columns, e.g. meter,hostname,token_file`);
  const columns = header.fields.map((name) => {
    if (!(BATCH_COLUMNS as readonly string[]).includes(name))
      throw new BatchError(
        `${file}:${header.line}: unknown column "${name}"; the columns are ${BATCH_COLUMNS.join(', ')}`,
      );
    return name as BatchColumn;
  });
  if (!columns.includes('meter'))
    throw new BatchError(`${file}:${header.line}: a column "meter" is required`);
  if (new Set(columns).size !== columns.length)
    throw new BatchError(`${file}:${header.line}: a column is named twice`);
  const seen = new Map<string, number>();
  return rows.map(({ line, fields }) => {
    if (fields.length !== columns.length)
      throw new BatchError(`${file}:${line}: ${fields.length} fields, the header has ${columns.length}`);
    const row: Partial<Record<BatchColumn, string>> = {};
    columns.forEach((c, i) => {
      if (fields[i] !== '') row[c] = fields[i];
    });
    if (!row.meter) throw new BatchError(`${file}:${line}: the meter id is empty`);
    const first = seen.get(row.meter);
    if (first !== undefined)
      throw new BatchError(`${file}:${line}: meter ${row.meter} is already on line ${first}`);
    seen.set(row.meter, line);
    return { ...row, meter: row.meter, line };
  });
}
