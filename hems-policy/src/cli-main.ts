/**
 * `hems-policy`: validate, explain and try out a household bidding policy. `main` takes the
 * arguments and an `io` (output, files, clock) so tests run it in-process; `cli.ts` is the entry.
 * Exit codes: 0 done (valid / decided / printed), 1 an input file is invalid or unreadable, 2 usage.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { type Decision, decide } from './decide.js';
import { type DecisionContextInput, isTimeZone } from './decision-context.js';
import { instant } from './dr-event.js';
import { energy, explainPolicy, perKWh } from './explain.js';
import { policyJsonSchemaText } from './json-schema.js';
import { InputFileError, InvalidInputError } from './policy-errors.js';
import { parseContext, parseEvent, parsePolicy, validatePolicy } from './validate.js';

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  readFile(path: string): string;
  /** The clock used when no context gives `now` (the CLI is the only place that reads it). */
  now(): Date;
  /** The time zone used when no context gives one. */
  timeZone: string;
}

export const defaultIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  readFile: (path) => readFileSync(path, 'utf8'),
  now: () => new Date(),
  timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
};

const LIMIT_WORDS = {
  loads: 'what the loads can shed',
  requested: "the event's requested reduction",
  'per-event': "the policy's maximum per event",
  'per-day': "what is left of the policy's daily maximum",
  baseline: 'recent consumption over the window',
} as const;

function read(io: CliIo, file: string): string {
  try {
    return io.readFile(file);
  } catch (err) {
    throw new InputFileError(file, err);
  }
}

export function formatDecision(decision: Decision): string[] {
  const skipped = decision.skippedLoads.map((s) => `skipped ${s.name} (${s.code}): ${s.message}`);
  if (decision.kind === 'no-bid') {
    return [`no bid for event ${decision.eventId} (${decision.code}): ${decision.reason}`, ...skipped];
  }
  const { bid } = decision;
  return [
    `bid for event ${decision.eventId}: ${energy(bid.quantityWh)} at ${bid.pricePerMWh} per MWh (${perKWh(bid.pricePerMWh)} per kWh)`,
    ...bid.loads.map((l) => `  switch off ${l.name} (${l.actuator}) from ${l.from} to ${l.to}`),
    `limited by ${LIMIT_WORDS[decision.limitedBy]} (the loads could shed ${energy(decision.sheddableWh)})`,
    ...(decision.requiresApproval ? ['ask-first: send this bid only after the household approves it'] : []),
    ...skipped,
  ];
}

export function buildProgram(io: CliIo, setExit: (code: number) => void): Command {
  const out = (lines: string[]) => io.stdout(`${lines.join('\n')}\n`);
  const program = new Command('hems-policy')
    .description(
      'Household demand-response bidding policy: check a policy file, explain it, and decide what to bid for an event.',
    )
    .configureOutput({ writeOut: (s) => io.stdout(s), writeErr: (s) => io.stderr(s) })
    .exitOverride()
    .showHelpAfterError('(run hems-policy --help for usage)')
    .addHelpText(
      'after',
      `
Examples:
  hems-policy validate policy.yaml
  hems-policy explain policy.yaml
  hems-policy decide policy.yaml --event event.json --context context.json
  hems-policy decide policy.yaml --event event.json --now 2026-01-14T15:00:00Z --time-zone Europe/London --json
  hems-policy schema > policy.schema.json

Exit codes: 0 done, 1 an input file is invalid or unreadable, 2 wrong usage.
Policy format, context file and the decision rules: see README.md of @tre/hems-policy.`,
    );

  program
    .command('validate')
    .description('check a policy file; every problem is reported as "... at FILE:LINE:COLUMN"')
    .argument('<file>', 'policy file (YAML)')
    .addHelpText('after', '\nExample:\n  hems-policy validate examples/flat-ev.yaml && echo ok')
    .action((file: string) => {
      const check = validatePolicy(read(io, file), file);
      if (check.ok) {
        out([`${file}: valid (mode ${check.value.mode}, ${check.value.loads.length} load(s))`]);
      } else {
        io.stderr(`${check.problems.map((p) => p.message).join('\n')}\n`);
        setExit(1);
      }
    });

  program
    .command('decide')
    .description('decide whether and what to bid for a demand-response event')
    .argument('<file>', 'policy file (YAML)')
    .requiredOption(
      '--event <event.json>',
      'the event: {eventId, windowStart, windowEnd, bidDeadline, requestedReductionWh, priceCapPerMWh}',
    )
    .option(
      '--context <context.json>',
      'local context: {timeZone, now, committedTodayWh, recentConsumption, loads, sensors}',
    )
    .option(
      '--now <instant>',
      'the current instant (UTC ISO 8601), overriding the context; default: the clock',
    )
    .option('--time-zone <zone>', 'IANA time zone, overriding the context; default: the system time zone')
    .option('--json', 'print the decision as JSON')
    .addHelpText(
      'after',
      `
Examples:
  hems-policy decide policy.yaml --event event.json --context context.json
  hems-policy decide policy.yaml --event event.json --now 2026-01-14T15:00:00Z --time-zone Europe/London --json

event.json:   {"eventId": "e-1", "windowStart": "2026-01-14T17:00:00Z", "windowEnd": "2026-01-14T19:00:00Z",
               "bidDeadline": "2026-01-14T16:00:00Z", "requestedReductionWh": 50000, "priceCapPerMWh": 300000}
context.json: {"timeZone": "Europe/London", "now": "2026-01-14T15:00:00Z", "committedTodayWh": 0,
               "loads": {"heat-pump": {"state": "on", "since": "2026-01-14T14:00:00Z"}},
               "sensors": {"living-room": {"celsius": 20.5, "at": "2026-01-14T14:55:00Z"}}}`,
    )
    .action(
      (
        file: string,
        opts: { event: string; context?: string; now?: string; timeZone?: string; json?: boolean },
      ) => {
        const policy = parsePolicy(read(io, file), file);
        const event = parseEvent(read(io, opts.event), opts.event);
        const base: DecisionContextInput = opts.context
          ? parseContext(read(io, opts.context), opts.context)
          : { timeZone: io.timeZone, now: io.now().toISOString() };
        if (opts.now !== undefined && !instant.safeParse(opts.now).success)
          program.error(
            `--now must be an instant in UTC, ISO 8601 with Z (e.g. 2026-01-14T15:00:00Z), got "${opts.now}"`,
          );
        if (opts.timeZone !== undefined && !isTimeZone(opts.timeZone))
          program.error(
            `--time-zone must be an IANA time zone such as Europe/London, got "${opts.timeZone}"`,
          );
        const context = { ...base, timeZone: opts.timeZone ?? base.timeZone, now: opts.now ?? base.now };
        const decision = decide(policy, event, context);
        out(opts.json ? [JSON.stringify(decision, null, 2)] : formatDecision(decision));
      },
    );

  program
    .command('explain')
    .description('say in plain words what a policy allows')
    .argument('<file>', 'policy file (YAML)')
    .addHelpText('after', '\nExample:\n  hems-policy explain examples/house-heat-pump.yaml')
    .action((file: string) => {
      out(explainPolicy(parsePolicy(read(io, file), file)));
    });

  program
    .command('schema')
    .description('print the JSON Schema of policy files (for editors: # yaml-language-server: $schema=...)')
    .addHelpText('after', '\nExample:\n  hems-policy schema > policy.schema.json')
    .action(() => io.stdout(policyJsonSchemaText()));

  return program;
}

/** Run the CLI with user arguments (without `node` and the script); resolves to the exit code. */
export async function main(args: readonly string[], io: Partial<CliIo> = {}): Promise<number> {
  const fullIo = { ...defaultIo, ...io };
  let code = 0;
  try {
    await buildProgram(fullIo, (c) => {
      code = c;
    }).parseAsync([...args], { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof InvalidInputError || err instanceof InputFileError) {
      fullIo.stderr(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
