/** The monitoring options: `tre start` runs with them, `tre attest-policy` whitelists them. */
import { type Command, CommanderError } from 'commander';
import type { MonitoringOptions } from '../monitoring/monitoring-service.js';

export interface MonitoringFlags {
  minGroupSize: number;
  epsilon: string;
  dailyBudget: number;
  rollingBudget: number;
  releaseMinutes: number;
}

export function withMonitoringOptions(command: Command): Command {
  return command
    .option(
      '--min-group-size <n>',
      'smallest DNO aggregation group (never below 2)',
      (v) => Number.parseInt(v, 10),
      50,
    )
    .option('--epsilon <p/q>', 'privacy parameter of one aggregate release, as a fraction', '1/1')
    .option('--daily-budget <epsilon>', 'privacy budget per household per UTC day', Number, 100)
    .option(
      '--rolling-budget <epsilon>',
      'privacy budget per household over any 30 consecutive UTC days',
      Number,
      1_500,
    )
    .option(
      '--release-minutes <m>',
      'aggregate release interval: 15 or 30',
      (v) => Number.parseInt(v, 10),
      30,
    );
}

export function monitoringFrom(o: MonitoringFlags): MonitoringOptions {
  const eps = /^(\d+)\/(\d+)$/.exec(o.epsilon);
  if (!eps)
    throw new CommanderError(2, 'tre.epsilon', `--epsilon must be a fraction such as 1/2 (got ${o.epsilon})`);
  if (o.releaseMinutes !== 15 && o.releaseMinutes !== 30)
    throw new CommanderError(2, 'tre.release', '--release-minutes must be 15 or 30');
  return {
    minGroupSize: o.minGroupSize,
    epsilon: [Number(eps[1]), Number(eps[2])],
    dailyBudget: o.dailyBudget,
    rollingBudget: o.rollingBudget,
    releaseMinutes: o.releaseMinutes,
  };
}

/** What the TRE measures as its configuration: the regulator's whitelist must be made from the same. */
export const measuredConfigOf = (monitoring: MonitoringOptions) => ({ monitoring });
