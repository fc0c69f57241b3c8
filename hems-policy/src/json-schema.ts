/**
 * The published JSON Schema of the policy file, derived from the zod schema so the two cannot drift
 * (committed as `policy.schema.json`; a test checks it equals `hems-policy schema`). Draft-07, which
 * editors' YAML language servers understand. Cross-field rules (window order, overlapping windows,
 * unique names, rule load names, perEvent <= perDay) are checked by `validate` only.
 */
import { z } from 'zod';
import { policySchema } from './policy-schema.js';

export function policyJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(policySchema, {
    io: 'input',
    target: 'draft-07',
    unrepresentable: 'throw',
  }) as Record<string, unknown>;
}

/** The schema as `hems-policy schema` prints it and `policy.schema.json` stores it. */
export function policyJsonSchemaText(): string {
  return `${JSON.stringify(policyJsonSchema(), null, 2)}\n`;
}
