/**
 * Validation of policy files, event files and context files, with every problem located at
 * file:line:column. Unknown keys in a policy are errors, never silently ignored.
 */
import { type DecisionContext, decisionContextSchema } from './decision-context.js';
import { type DrEvent, drEventSchema } from './dr-event.js';
import { InvalidInputError } from './policy-errors.js';
import { type Policy, policySchema } from './policy-schema.js';
import { checkSource, type SourceCheck } from './source-issues.js';

/** Check a policy file's text; `file` is the name used in messages (e.g. `policy.yaml`). */
export function validatePolicy(text: string, file = 'policy.yaml'): SourceCheck<Policy> {
  return checkSource(policySchema, text, file);
}

/** Check a DR event file's text (JSON). */
export function validateEvent(text: string, file = 'event.json'): SourceCheck<DrEvent> {
  return checkSource(drEventSchema, text, file);
}

/** Check a decision context file's text (JSON). */
export function validateContext(text: string, file = 'context.json'): SourceCheck<DecisionContext> {
  return checkSource(decisionContextSchema, text, file);
}

function orThrow<T>(check: SourceCheck<T>, code: InvalidInputError['code']): T {
  if (check.ok) return check.value;
  throw new InvalidInputError(code, check.problems);
}

/** The policy in `text`, or an `InvalidInputError` (code HEMS_POLICY_INVALID) listing every problem. */
export function parsePolicy(text: string, file = 'policy.yaml'): Policy {
  return orThrow(validatePolicy(text, file), 'HEMS_POLICY_INVALID');
}

/** The DR event in `text`, or an `InvalidInputError` (code HEMS_EVENT_INVALID). */
export function parseEvent(text: string, file = 'event.json'): DrEvent {
  return orThrow(validateEvent(text, file), 'HEMS_EVENT_INVALID');
}

/** The decision context in `text`, or an `InvalidInputError` (code HEMS_CONTEXT_INVALID). */
export function parseContext(text: string, file = 'context.json'): DecisionContext {
  return orThrow(validateContext(text, file), 'HEMS_CONTEXT_INVALID');
}
