/**
 * `meter-agent run`: the household daemon. Meter (serial) -> intervals -> outbox -> attested TRE;
 * DR events -> household policy -> bids (auto, or held for `bids approve`) -> relays; everything
 * it knows in `status.json`. SIGTERM/SIGINT stop it cleanly; nothing is lost (the outbox is on disk).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  drivableActuator,
  IntervalAccumulator,
  LoadSwitch,
  MeterReader,
  ModeCReader,
  type RegisterReading,
  systemSerialBinding,
} from '@tre/hardware';
import { decide, type Policy, parsePolicy } from '@tre/hems-policy';
import { BASELINE_LOOKBACK_DAYS, baselineIntervals, type Clock, systemClock } from '@tre/protocol';
import type { AgentConfig } from './agent-config.js';
import { serveControl } from './control-socket.js';
import { type BidProposal, HouseholdAgent } from './household-agent.js';
import { Outbox } from './outbox.js';
import { loadAttestationPolicy, tpmQuoteAttestor } from './tre-attestor.js';
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
    attestor: tpmQuoteAttestor({ regulatorRootPem: ca, policy: attestationPolicy, clock }),
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
  const recent: { intervalStart: string; intervalMinutes: number; energyWh: number }[] = [];
  const propose = (event: Parameters<typeof decide>[1]): BidProposal => {
    if (!policy) return { reason: 'no policy configured' };
    const d = decide(policy, event, {
      timeZone: config.meter.timeZone,
      loads: unavailable,
      now: new Date(clock.now()).toISOString(),
      // The intervals the TRE's baseline for this window is made of: bids stay within what it accepts.
      recentConsumption: baselineIntervals(
        recent,
        Date.parse(event.windowStart),
        Date.parse(event.windowEnd),
      ),
    });
    return d.kind === 'bid' ? { bid: d.bid } : { reason: d.reason };
  };
  const agent = new HouseholdAgent({
    link,
    clock,
    stateDir: config.stateDir,
    mode: policy?.mode ?? 'never',
    propose,
    loads,
    randomId: () => randomBytes(12).toString('base64url'),
  });
  link.on('state', (state, detail) => {
    log(`TRE ${state}${detail ? `: ${detail}` : ''}`);
    loads?.showTrust(state === 'trusted' ? 'trusted' : state === 'untrusted' ? 'untrusted' : 'unknown');
  });
  const acc = new IntervalAccumulator(config.meter.intervalMinutes);
  const record = (reading: RegisterReading) => {
    for (const interval of acc.push(reading)) {
      agent.recordInterval(interval);
      recent.push({
        intervalStart: interval.intervalStart,
        intervalMinutes: interval.intervalMinutes,
        energyWh: interval.importWh,
      });
      // Enough for the baseline's lookback at 15-minute intervals; nothing older is needed.
      recent.splice(0, Math.max(0, recent.length - (BASELINE_LOOKBACK_DAYS + 1) * 96));
    }
  };
  const binding = await systemSerialBinding();
  let reader: MeterReader | ModeCReader;
  if (config.meter.protocol === 'iec62056-21') {
    // Optical head: the meter is asked (mode C); registers are timed by this box's clock.
    const modeC = new ModeCReader({
      path: config.meter.port,
      binding,
      clock,
      pollMs: config.meter.pollSeconds * 1000,
    });
    modeC.on('readout', (r) => record({ at: r.at, importWh: r.importWh, exportWh: r.exportWh }));
    modeC.on('rejected', (reason) => log(`meter readout rejected: ${reason}`));
    reader = modeC;
  } else {
    const slow = config.meter.framing === '9600-7E1';
    const p1 = new MeterReader({
      path: config.meter.port,
      binding,
      clock,
      baudRate: slow ? 9_600 : 115_200,
      dataBits: slow ? 7 : 8,
      parity: slow ? 'even' : 'none',
    });
    p1.on('telegram', (t) => {
      if (t.timestamp) record({ at: Date.parse(t.timestamp), importWh: t.importWh, exportWh: t.exportWh });
    });
    p1.on('rejected', (reason) => log(`telegram rejected: ${reason}`));
    reader = p1;
  }
  reader.on('state', (state, detail) => log(`meter port ${state}${detail ? `: ${detail}` : ''}`));
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
      agent.stop();
      await link.stop();
      outbox.close();
      await new Promise<void>((resolve) => control.close(() => resolve()));
    },
  };
}
