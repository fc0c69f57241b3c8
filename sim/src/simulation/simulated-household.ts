/**
 * One simulated household running the real agent code in-process: its meter (seeded load profile),
 * the durable outbox, the TRE link (mTLS MQTT) and the household agent with its policy.
 */
import { join } from 'node:path';
import {
  formatDsmrTelegram,
  IntervalAccumulator,
  type IntervalRecord,
  openVirtualMeterPort,
  type VirtualMeterPort,
} from '@tre/hardware';
import type { Policy } from '@tre/hems-policy';
import { Bidder, HouseholdAgent, Outbox, type TreAttestor, TreLink } from '@tre/meter-agent';
import type { Clock } from '@tre/protocol';
import { type HouseholdProfile, SimulatedMeter } from '../households/load-profile.js';

export interface HouseholdIdentity {
  meterId: string;
  files: { key: Buffer; cert: Buffer; ca: Buffer };
}

export class SimulatedHousehold {
  readonly meter: SimulatedMeter;
  readonly link: TreLink;
  readonly agent: HouseholdAgent;
  readonly outbox: Outbox;
  /** The household's policy with its own recent intervals: what it bids in DR events. */
  private readonly bidder: Bidder;
  private lastRegister: number;
  /** What this household sent, per interval start: the simulator's ground truth. */
  readonly sent = new Map<number, number>();
  /** Readings the TRE acknowledged (accepted receipts). */
  acknowledgedReadings = 0;
  /** Accepted bids this household already carried out. */
  private readonly curtailed = new Set<string>();

  constructor(
    readonly id: HouseholdIdentity,
    readonly profile: HouseholdProfile,
    opts: {
      url: string;
      clock: Clock;
      stateDir: string;
      attestor: TreAttestor;
      intervalMinutes: 15 | 30;
      policy: Policy;
      mode: 'auto-bid' | 'ask-first' | 'never';
      randomId: () => string;
    },
  ) {
    this.intervalMinutes = opts.intervalMinutes;
    this.meter = new SimulatedMeter(profile, opts.clock.now());
    this.lastRegister = this.meter.registerWh;
    this.outbox = new Outbox(join(opts.stateDir, 'outbox.jsonl'));
    this.link = new TreLink({
      meterId: id.meterId,
      endpoints: [opts.url],
      tls: id.files,
      outbox: this.outbox,
      clock: opts.clock,
      attestor: opts.attestor,
      backoff: { baseMs: 1_000, maxMs: 30_000 },
      receiptTimeoutMs: 60_000,
      // Agents re-attest every 15 real minutes; at thousands of times real speed that would be a
      // quote per agent every few hundred milliseconds, so simulated agents re-attest every 6 simulated hours.
      attestEveryMs: 6 * 3_600_000,
    });
    this.bidder = new Bidder({ policy: opts.policy, timeZone: 'UTC', clock: opts.clock });
    this.agent = new HouseholdAgent({
      link: this.link,
      clock: opts.clock,
      stateDir: opts.stateDir,
      mode: opts.mode,
      propose: (event) => this.bidder.propose(event),
      randomId: opts.randomId,
      writeStatus: false, // nobody runs `meter-agent status` on a simulated household
    });
    this.link.on('message', () => this.carryOutAccepted());
    this.link.on('receipt', (r) => {
      if (r.status === 'accepted' && r.family === 'reading') this.acknowledgedReadings++;
    });
  }

  /** The simulated household carries out what was accepted: its meter sheds the bid's energy. */
  private carryOutAccepted(): void {
    for (const p of this.agent.proposals.values()) {
      if (p.status !== 'accepted' || this.curtailed.has(p.bidId)) continue;
      this.curtailed.add(p.bidId);
      const from = Date.parse(p.loads[0]?.from ?? '');
      const to = Date.parse(p.loads[0]?.to ?? '');
      if (to > from) this.meter.curtail(from, to, Math.ceil((p.quantityWh * 3_600_000) / (to - from)));
    }
  }

  private readonly intervalMinutes: 15 | 30;

  start(): void {
    this.link.start();
  }

  /** Closes the interval ending at `t`: advances the meter and records the interval. */
  private serial: VirtualMeterPort | undefined;

  /**
   * Wires the household through a virtual serial port: its meter sends real DSMR telegrams, and the
   * agent's reader, parser and interval accumulator (the code a Pi runs) turn them into intervals.
   */
  async attachSerialMeter(path: string, clock: Clock): Promise<void> {
    this.serial = await openVirtualMeterPort(path, clock);
    const acc = new IntervalAccumulator(this.intervalMinutes);
    this.serial.reader.on('telegram', (t) => {
      if (!t.timestamp) return;
      for (const rec of acc.push({
        at: Date.parse(t.timestamp),
        importWh: t.importWh,
        exportWh: t.exportWh,
      }))
        this.record(rec);
    });
  }

  closeInterval(t: number): void {
    this.meter.advanceTo(t);
    if (this.serial) {
      // Telegrams a second either side of the boundary (a real meter sends one every 1-10 s): the
      // reader closes the interval as soon as the boundary has passed.
      for (const at of [t - 1_000, t + 1_000]) {
        this.serial.emit(
          Buffer.from(
            formatDsmrTelegram({ timestamp: new Date(at), dst: false, importWh: [this.meter.registerWh, 0] }),
            'latin1',
          ),
        );
      }
      return;
    }
    const register = this.meter.registerWh;
    const start = t - this.intervalMinutes * 60_000;
    const energy = register - this.lastRegister;
    this.lastRegister = register;
    this.record({
      intervalStart: new Date(start).toISOString(),
      intervalMinutes: this.intervalMinutes,
      importWh: energy,
      exportWh: 0,
      importRegisterWh: register,
      exportRegisterWh: 0,
    });
  }

  /** A closed interval: the ground truth, the agent's outbox, the bidder's recent intervals. */
  private record(rec: IntervalRecord): void {
    this.sent.set(Date.parse(rec.intervalStart), rec.importWh);
    this.agent.recordInterval(rec);
    this.bidder.record(rec);
  }

  async stop(): Promise<void> {
    await this.serial?.reader.stop();
    this.agent.stop();
    await this.link.stop();
    this.outbox.close();
  }
}
