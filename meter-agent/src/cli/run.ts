/** `meter-agent run`: the daemon, until SIGTERM or SIGINT. */
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH, loadAgentConfig } from '../agent-config.js';
import { runAgent } from '../agent-daemon.js';

export function addRunCommand(program: Command): void {
  program
    .command('run')
    .description('run the agent: read the meter, send to the attested TRE, bid by the household policy')
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG_PATH)
    .action(async (o: { config: string }) => {
      const running = await runAgent(loadAgentConfig(o.config));
      await new Promise<void>((resolve) => {
        process.once('SIGTERM', () => resolve());
        process.once('SIGINT', () => resolve());
      });
      await running.stop();
    });
}
