/**
 * `meter-agent bids list|approve|decline|override`: the proposals ask-first mode holds for the
 * household, and taking back an accepted shed.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_CONFIG_PATH, loadAgentConfig } from '../agent-config.js';
import { sendControl } from '../control-socket.js';
import { readStatus } from './status.js';

export function addBidsCommands(program: Command): void {
  const bids = program
    .command('bids')
    .description('demand-response proposals (ask-first mode holds them for you)');
  bids
    .command('list')
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG_PATH)
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const proposals = readStatus(loadAgentConfig(o.config).stateDir).proposals;
      if (o.json) return console.log(JSON.stringify(proposals, null, 2));
      if (proposals.length === 0) return console.log('no proposals');
      for (const p of proposals)
        console.log(
          `${p.bidId}  event ${p.eventId}  ${p.quantityWh} Wh at ${p.pricePerMWh}/MWh  ${p.status}`,
        );
    });
  for (const cmd of ['approve', 'decline'] as const) {
    bids
      .command(`${cmd} <bidId>`)
      .description(`${cmd} a proposed bid`)
      .option('--config <file>', 'agent configuration', DEFAULT_CONFIG_PATH)
      .action(async (bidId: string, o: { config: string }) => {
        const answer = await sendControl(join(loadAgentConfig(o.config).stateDir, 'control.sock'), {
          cmd,
          bidId,
        });
        if (!answer.ok) throw new Error(answer.error);
        console.log(`${cmd}d ${bidId}`);
      });
  }
  bids
    .command('override <eventId>')
    .description(
      'take back the accepted shed of an event: loads on at once; the bid settles as not delivered (no credit)',
    )
    .option('--config <file>', 'agent configuration', DEFAULT_CONFIG_PATH)
    .action(async (eventId: string, o: { config: string }) => {
      const answer = await sendControl(join(loadAgentConfig(o.config).stateDir, 'control.sock'), {
        cmd: 'override',
        eventId,
      });
      if (!answer.ok) throw new Error(answer.error);
      console.log(`overrode the shed of event ${eventId}: loads restored; settles as not delivered`);
    });
}
