/** @tre/hems-policy: the household's demand-response bidding policy. */
export {
  type Bid,
  type BidDecision,
  type Decision,
  decide,
  type LoadShed,
  MAX_WINDOW_MINUTES,
  NO_BID_CODES,
  type NoBidCode,
  type NoBidDecision,
  type QuantityLimit,
  SKIP_CODES,
  type SkipCode,
  type SkippedLoad,
} from './decide.js';
export {
  type ConsumptionInterval,
  type DecisionContext,
  type DecisionContextInput,
  decisionContextSchema,
  isTimeZone,
  type LoadState,
  type SensorReading,
} from './decision-context.js';
export { type DrEvent, drEventSchema } from './dr-event.js';
export { EXAMPLE_POLICIES, type ExamplePolicy, examplePolicy } from './examples.js';
export { explainPolicy } from './explain.js';
export { policyJsonSchema, policyJsonSchemaText } from './json-schema.js';
export { localDate } from './local-time.js';
export { InputFileError, InvalidInputError } from './policy-errors.js';
export {
  type ComfortRule,
  type Load,
  MODES,
  type Mode,
  type Policy,
  type PolicyInput,
  policySchema,
  type TimeWindow,
  WEEKDAYS,
  type Weekday,
} from './policy-schema.js';
export type { SourceCheck, SourceProblem } from './source-issues.js';
export {
  parseContext,
  parseEvent,
  parsePolicy,
  validateContext,
  validateEvent,
  validatePolicy,
} from './validate.js';
