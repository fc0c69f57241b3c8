/** Errors of this package: each a class with a stable `code` and a message that says what to do. */
import type { SourceProblem } from './source-issues.js';

/** An input file (policy, event or context) that is not valid; every problem is located. */
export class InvalidInputError extends Error {
  readonly code: 'HEMS_POLICY_INVALID' | 'HEMS_EVENT_INVALID' | 'HEMS_CONTEXT_INVALID';
  readonly problems: readonly SourceProblem[];

  constructor(code: InvalidInputError['code'], problems: readonly SourceProblem[]) {
    super(problems.map((p) => p.message).join('\n'));
    this.name = 'InvalidInputError';
    this.code = code;
    this.problems = problems;
  }
}

/** An input file that could not be read at all. */
export class InputFileError extends Error {
  readonly code = 'HEMS_FILE_UNREADABLE';

  constructor(
    readonly file: string,
    cause: unknown,
  ) {
    super(`cannot read ${file}: ${(cause as Error).message ?? String(cause)}`, { cause });
    this.name = 'InputFileError';
  }
}
