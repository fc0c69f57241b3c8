/** The published JSON Schema: derived from zod, committed, and in agreement with zod (checked with ajv). */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { main } from '../src/cli-main.js';
import { policyJsonSchema, policyJsonSchemaText } from '../src/json-schema.js';
import { validatePolicy } from '../src/validate.js';
import { policyArb } from './arbitraries.js';
import { EXAMPLES, INVALID_FIXTURES } from './fixtures.js';

const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');
const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
const validate = ajv.compile(policyJsonSchema());

/**
 * Fixtures only zod rejects: rules across fields that JSON Schema cannot state (window order,
 * overlapping windows, names used in rules) Every other fixture ajv must reject.
 */
const ZOD_ONLY = new Set(['reversed-time-window', 'overlapping-windows', 'rule-names-unknown-load']);

describe('policy.schema.json', () => {
  it('is exactly what `hems-policy schema` prints (regenerate with: node hems-policy/dist/cli.js schema > hems-policy/policy.schema.json)', async () => {
    let out = '';
    const code = await main(['schema'], { stdout: (s) => (out += s) });
    expect(code).toBe(0);
    expect(out).toBe(policyJsonSchemaText());
    expect(read('../policy.schema.json')).toBe(out);
  });

  it.each(EXAMPLES)('accepts examples/%s.yaml', (name) => {
    const ok = validate(parse(read(`../examples/${name}.yaml`)));
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });

  it.each(Object.keys(INVALID_FIXTURES).filter((n) => !ZOD_ONLY.has(n)))(
    'rejects fixtures/invalid/%s.yaml',
    (name) => {
      expect(validate(parse(read(`./fixtures/invalid/${name}.yaml`)))).toBe(false);
    },
  );

  it.each([...ZOD_ONLY])('leaves %s.yaml (a cross-field rule) to zod, which rejects it', (name) => {
    const text = read(`./fixtures/invalid/${name}.yaml`);
    expect(validate(parse(text))).toBe(true);
    expect(validatePolicy(text).ok).toBe(false);
  });

  it('agrees with zod on random valid policies', () => {
    fc.assert(
      fc.property(policyArb, (policy) => {
        expect(validate(policy)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('agrees with zod on random single-field breakages', () => {
    const breakages: [string, (p: Record<string, unknown>) => void][] = [
      ['unknown top-level key', (p) => (p.extra = 1)],
      ['float price', (p) => (p.minPricePerMWh = 0.5)],
      ['string limit', (p) => ((p.maxReductionWh as Record<string, unknown>).perDay = '100')],
      ['no mode', (p) => delete p.mode],
      ['bad mode', (p) => (p.mode = 'maybe')],
      ['negative power', (p) => ((p.loads as Record<string, unknown>[])[0]!.typicalPowerW = -1)],
      [
        'bad time',
        (p) =>
          (((p.loads as Record<string, unknown>[])[0]!.allowedWindows as Record<string, unknown>[])[0]!.from =
            '7:00'),
      ],
      ['unknown load key', (p) => ((p.loads as Record<string, unknown>[])[0]!.colour = 'red')],
    ];
    fc.assert(
      fc.property(policyArb, fc.constantFrom(...breakages), (policy, [, breakIt]) => {
        const broken = structuredClone(policy) as Record<string, unknown>;
        breakIt(broken);
        expect(validate(broken)).toBe(false);
        expect(validatePolicy(JSON.stringify(broken)).ok).toBe(false);
      }),
      { numRuns: 100 },
    );
  });
});
