/** The shipped example policies (`examples/*.yaml`), parsed: a starting point and what the simulator uses. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Policy } from './policy-schema.js';
import { parsePolicy } from './validate.js';

export const EXAMPLE_POLICIES = ['flat-ev', 'house-heat-pump', 'never'] as const;
export type ExamplePolicy = (typeof EXAMPLE_POLICIES)[number];

export function examplePolicy(name: ExamplePolicy): Policy {
  const path = fileURLToPath(new URL(`../examples/${name}.yaml`, import.meta.url));
  return parsePolicy(readFileSync(path, 'utf8'), path);
}
