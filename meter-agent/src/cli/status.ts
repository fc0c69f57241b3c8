/** `meter-agent status`: what the running agent last wrote to its `status.json`. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH, loadAgentConfig } from '../agent-config.js';
import type { AgentStatus } from '../household-agent.js';

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      'version, trust state, last reading, outbox depth, running bill, open events (from the running agent)',
    )
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG_PATH)
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const config = loadAgentConfig(o.config);
      const status = readStatus(config.stateDir);
      if (o.json) return console.log(JSON.stringify(status, null, 2));
      console.log(`agent version:  ${status.version ?? 'unknown (written by an older agent)'}`);
      console.log(`TRE trust:      ${status.trust}`);
      console.log(
        `last interval:  ${status.lastInterval ? `${status.lastInterval.intervalStart} (${status.lastInterval.importWh} Wh)` : 'none yet'}`,
      );
      console.log(`outbox depth:   ${status.outboxDepth}`);
      console.log(
        `running bill:   ${status.runningBill ? `${status.runningBill.totalMinor} ${status.runningBill.currency} minor units since ${status.runningBill.periodStart}` : 'none yet'}`,
      );
      console.log(`open DR events: ${status.openEvents.length ? status.openEvents.join(', ') : 'none'}`);
      console.log(`as of:          ${status.updatedAt}`);
    });
}

export function readStatus(stateDir: string): AgentStatus {
  try {
    return JSON.parse(readFileSync(join(stateDir, 'status.json'), 'utf8')) as AgentStatus;
  } catch {
    throw new Error(`no status in ${stateDir}: is the agent running (meter-agent run)?`);
  }
}
