/**
 * `meter-agent run`: the household daemon. Meter (serial) -> intervals -> outbox -> attested TRE;
 * DR events -> household policy (with the comfort sensors and what is already committed on the
 * event's day) -> bids (auto, or held for `bids approve`) -> relays; everything it knows in
 * `status.json`, read back on start. SIGTERM/SIGINT stop it cleanly; nothing is lost (the outbox
 * is on disk).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { drivableActuator, LoadSwitch, type MeterSnapshot } from '@tre/hardware';
import { type Policy, parsePolicy } from '@tre/hems-policy';
import { type Clock, homeNodeId, systemClock } from '@tre/protocol';
import type { AgentConfig, LocalBrokerConfig } from './agent-config.js';
import { AgentMetrics, serveAgentMetrics } from './agent-metrics.js';
import { Bidder } from './bidder.js';
import { ComfortSensors, type HomeBroker } from './comfort-sensors.js';
import { serveControl } from './control-socket.js';
import { intervalUpdate, meterUpdate, statusStates } from './home-assistant.js';
import { HomePublisher } from './home-publisher.js';
import { HouseholdAgent, previousProposals } from './household-agent.js';
import { meterPortOf, openMeterReading } from './meter-reading.js';
import { Outbox } from './outbox.js';
import { systemdNotifier } from './sd-notify.js';
import { crlBeside, loadAttestationPolicy, readRegulatorCrl, tpmQuoteAttestor } from './tre-attestor.js';
import { TreLink } from './tre-link.js';
import { AGENT_VERSION } from './version.js';

/** The household broker of `local`, its password (first line of `passwordFile`), CA and client key read. */
function homeBrokerOf(config: LocalBrokerConfig): HomeBroker {
  const { url, username, passwordFile, ca, cert, key } = config;
  return {
    url,
    ...(username !== undefined ? { username } : {}),
    ...(passwordFile !== undefined
      ? { password: readFileSync(passwordFile, 'utf8').split('\n')[0]!.trimEnd() }
      : {}),
    ...(ca !== undefined ? { ca: readFileSync(ca, 'utf8') } : {}),
    ...(cert !== undefined && key !== undefined
      ? { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') }
      : {}),
  };
}

/** Loads a temperature rule protects while its sensor has no source: never offered (logged once at start). */
function unconfiguredSensors(policy: Policy | undefined, sensors: AgentConfig['sensors']): string[] {
  const lines: string[] = [];
  for (const rule of policy?.comfort ?? []) {
    if (rule.rule !== 'min-indoor-temperature' || sensors[rule.sensor]) continue;
    const loads = rule.loads?.join(', ') ?? 'every load';
    lines.push(
      `sensor ${rule.sensor} of a temperature rule has no source in agent.yaml (sensors): ${loads} never bid`,
    );
  }
  return lines;
}

export async function runAgent(
  config: AgentConfig,
  opts: { clock?: Clock; log?: (line: string) => void } = {},
): Promise<{ stop(): Promise<void>; agent: HouseholdAgent; sensors: ComfortSensors }> {
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
  const metrics = new AgentMetrics();
  const link = new TreLink({
    meterId: config.meterId,
    endpoints: config.tre.endpoints,
    tls: { key: readFileSync(config.tre.key), cert: readFileSync(config.tre.cert), ca },
    outbox,
    clock,
    attestor: metrics.observeAttestor(
      tpmQuoteAttestor({
        regulatorRootPem: ca,
        regulatorCrlPem: () => readRegulatorCrl(crlPath),
        policy: attestationPolicy,
        clock,
      }),
    ),
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
  for (const line of unconfiguredSensors(policy, config.sensors)) log(line);
  const homeBroker = config.local ? homeBrokerOf(config.local) : undefined;
  const sensors = new ComfortSensors({
    sensors: config.sensors,
    ...(homeBroker ? { homeBroker } : {}),
    clock,
    log,
  });
  const bidder = new Bidder({
    policy,
    timeZone: config.meter.timeZone,
    clock,
    loads: unavailable,
    sensors,
    log,
  });
  const agent = new HouseholdAgent({
    link,
    clock,
    stateDir: config.stateDir,
    mode: policy?.mode ?? 'never',
    propose: (event, committed) => bidder.propose(event, committed),
    proposals: previousProposals(config.stateDir),
    loads,
    randomId: () => randomBytes(12).toString('base64url'),
    log,
  });
  const home =
    config.local?.publish && homeBroker
      ? new HomePublisher({
          broker: homeBroker,
          discoveryPrefix: config.local.discoveryPrefix,
          device: { node: config.local.nodeId ?? homeNodeId(config.meterId), version: AGENT_VERSION },
          publishEveryMs: config.local.publishEverySeconds * 1000,
          clock,
          poll: () => statusStates(agent.status(), clock.now()),
          onOverride: () => {
            const events = agent.overrideActive();
            log(
              events.length
                ? `override pressed at home: ${events.length} accepted shed(s) end now, settled as not delivered`
                : 'override pressed at home: no accepted shed to override',
            );
            home?.refresh();
          },
          log,
        })
      : undefined;
  link.on('state', (state, detail) => {
    log(`TRE ${state}${detail ? `: ${detail}` : ''}`);
    home?.refresh();
    loads?.showTrust(state === 'trusted' ? 'trusted' : state === 'untrusted' ? 'untrusted' : 'unknown');
  });
  const port = meterPortOf(config.meter);
  const rejected = { dsmr: 'telegram', sml: 'SML file', 'iec62056-21': 'meter readout' }[port.protocol];
  const reader = await openMeterReading(port, config.meter.intervalMinutes, clock, {
    interval: (interval) => {
      agent.recordInterval(interval);
      bidder.record(interval);
      home?.publish(intervalUpdate(interval));
    },
    ...(home ? { snapshot: (s: MeterSnapshot) => home.meter(meterUpdate(s), s.at) } : {}),
    rejected: (reason) => log(`${rejected} rejected: ${reason}`),
    state: (state, detail) => {
      metrics.meterPort(state);
      log(`meter port ${state}${detail ? `: ${detail}` : ''}`);
    },
  });
  metrics.watch({ link, reader });
  const control = serveControl(join(config.stateDir, 'control.sock'), (req) => {
    if (req.cmd === 'approve') return { ok: true, detail: agent.approve(req.bidId) };
    if (req.cmd === 'override') return { ok: true, detail: agent.override(req.eventId) };
    agent.decline(req.bidId);
    return { ok: true };
  });
  link.start();
  reader.start();
  sensors.start();
  home?.start();
  agent.saveStatus();
  const metricsServer = config.metrics && (await serveAgentMetrics(config.metrics.listen, metrics));
  if (metricsServer) {
    const { address, port } = metricsServer.address;
    log(
      `metrics on http://${address.includes(':') ? `[${address}]` : address}:${port}/metrics (/healthz, /readyz)`,
    );
  }
  const systemd = systemdNotifier(log);
  systemd.ready();
  return {
    agent,
    sensors,
    async stop() {
      systemd.stopping();
      await reader.stop();
      await sensors.stop();
      await home?.stop();
      await agent.idle(); // a message being verified is handled (and its outcome saved) first
      agent.stop();
      await link.stop();
      outbox.close();
      await new Promise<void>((resolve) => control.close(() => resolve()));
      await metricsServer?.close();
    },
  };
}
