/** `meter-agent run`: the daemon, until SIGTERM or SIGINT. */
import { takeStopSignals } from '@tre/hardware';
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH, loadAgentConfig } from '../agent-config.js';
import { runAgent } from '../agent-daemon.js';

/** A clean stop (the outbox flushed, the link closed) not done this long after SIGTERM exits with status 1 (under systemd's 90 s). */
const STOP_BOUND_MS = 60_000;

export function addRunCommand(program: Command): void {
  program
    .command('run')
    .description('run the agent: read the meter, send to the attested TRE, bid by the household policy')
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG_PATH)
    .addHelpText(
      'after',
      `
SIGTERM or Ctrl-C stops the agent cleanly (status 0); a repeat while it stops is said and ignored
(SIGKILL stops it at once), and a clean stop not done within ${STOP_BOUND_MS / 1000} s exits with status 1.`,
    )
    .action(async (o: { config: string }) => {
      const running = await runAgent(loadAgentConfig(o.config));
      // Kept until stopped: a second signal (systemd's stop and a Ctrl-C) cannot cut the stop short.
      const signals = takeStopSignals({ name: 'meter-agent', boundMs: STOP_BOUND_MS });
      try {
        await signals.first;
        await running.stop();
      } finally {
        signals.dispose();
      }
    });
}
