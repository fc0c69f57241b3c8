/**
 * `meter-agent run`: the household daemon. Meter (serial) -> intervals -> outbox -> attested TRE;
 * DR events -> household policy -> bids (auto, or held for `bids approve`) -> relays; everything
 * it knows in `status.json`. SIGTERM/SIGINT stop it cleanly; nothing is lost (the outbox is on disk).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { drivableActuator, LoadSwitch } from '@tre/hardware';
import { type Policy, parsePolicy } from '@tre/hems-policy';
import { type Clock, systemClock } from '@tre/protocol';
import type { AgentConfig } from './agent-config.js';
import { Bidder } from './bidder.js';
import { serveControl } from './control-socket.js';
import { HouseholdAgent } from './household-agent.js';
import { meterPortOf, openMeterReading } from './meter-reading.js';
import { Outbox } from './outbox.js';
import { crlBeside, loadAttestationPolicy, readRegulatorCrl, tpmQuoteAttestor } from './tre-attestor.js';
import { TreLink } from './tre-link.js';

export async function runAgent(
  config: AgentConfig,
  opts: { clock?: Clock; log?: (line: string) => void } = {},
): Promise<{ stop(): Promise<void>; agent: HouseholdAgent }> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? ((line: string) => console.error(`meter-agent: ${line}`));
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  const ca = readFileSync(config.tre.ca, 'utf8');
  const attestationPolicy = await loadAttestationPolicy(
    readFileSync(config.tre.attestationPolicy, 'utf8'),
    ca,
  );
  // The regulator's CRL must be there at start; it is re-read on every attestation (updates apply).
  const crlPath = config.tre.crl ?? crlBeside(config.tre.ca);
  await readRegulatorCrl(crlPath);
  const policy: Policy | undefined = config.policy
    ? parsePolicy(readFileSync(config.policy, 'utf8'), config.policy)
    : undefined;
  const outbox = new Outbox(join(config.stateDir, 'outbox.jsonl'));
  const link = new TreLink({
    meterId: config.meterId,
    endpoints: config.tre.endpoints,
    tls: { key: readFileSync(config.tre.key), cert: readFileSync(config.tre.cert), ca },
    outbox,
    clock,
    attestor: tpmQuoteAttestor({
      regulatorRootPem: ca,
      regulatorCrlPem: () => readRegulatorCrl(crlPath),
      policy: attestationPolicy,
      clock,
    }),
    attestEveryMs: config.tre.attestEveryMinutes * 60_000,
  });
  const loads =
    config.io.plugin === 'none'
      ? undefined
      : await LoadSwitch.open(config.io.plugin, { statusLedPin: config.io.statusLedPin });
  // A load this box cannot switch is not offered: a bid it cannot deliver would cost the household.
  const unavailable = Object.fromEntries(
    (loads ? (policy?.loads ?? []).filter((l) => !drivableActuator(l.actuator)) : []).map((l) => [
      l.name,
      { state: 'unavailable' as const },
    ]),
  );
  for (const name of Object.keys(unavailable))
    log(`load ${name}: its actuator cannot be switched by this box (relay:<pin> only), so it is never bid`);
  const bidder = new Bidder({ policy, timeZone: config.meter.timeZone, clock, loads: unavailable });
  const agent = new HouseholdAgent({
    link,
    clock,
    stateDir: config.stateDir,
    mode: policy?.mode ?? 'never',
    propose: (event) => bidder.propose(event),
    loads,
    randomId: () => randomBytes(12).toString('base64url'),
    log,
  });
  link.on('state', (state, detail) => {
    log(`TRE ${state}${detail ? `: ${detail}` : ''}`);
    loads?.showTrust(state === 'trusted' ? 'trusted' : state === 'untrusted' ? 'untrusted' : 'unknown');
  });
  const port = meterPortOf(config.meter);
  const rejected = port.protocol === 'iec62056-21' ? 'meter readout' : 'telegram';
  const reader = await openMeterReading(port, config.meter.intervalMinutes, clock, {
    interval: (interval) => {
      agent.recordInterval(interval);
      bidder.record(interval);
    },
    rejected: (reason) => log(`${rejected} rejected: ${reason}`),
    state: (state, detail) => log(`meter port ${state}${detail ? `: ${detail}` : ''}`),
  });
  const control = serveControl(join(config.stateDir, 'control.sock'), (req) => {
    if (req.cmd === 'approve') return { ok: true, detail: agent.approve(req.bidId) };
    agent.decline(req.bidId);
    return { ok: true };
  });
  link.start();
  reader.start();
  agent.saveStatus();
  return {
    agent,
    async stop() {
      await reader.stop();
      await agent.idle(); // a message being verified is handled (and its outcome saved) first
      agent.stop();
      await link.stop();
      outbox.close();
      await new Promise<void>((resolve) => control.close(() => resolve()));
    },
  };
}
