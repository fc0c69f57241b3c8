/**
 * One simulated household running the real agent code in-process: its meter (seeded load profile),
 * the durable outbox, the TRE link (mTLS MQTT) and the household agent with its policy.
 */
import { join } from 'node:path';
import {
  formatDsmrTelegram,
  IntervalAccumulator,
  openVirtualMeterPort,
  type VirtualMeterPort,
} from '@tre/hardware';
import { type BidProposal, HouseholdAgent, Outbox, type TreAttestor, TreLink } from '@tre/meter-agent';
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
  private lastRegister: number;
  /** What this household sent, per interval start: the simulator's ground truth. */
  readonly sent = new Map<number, number>();

  constructor(
    readonly id: HouseholdIdentity,
    readonly profile: HouseholdProfile,
    opts: {
      url: string;
      clock: Clock;
      stateDir: string;
      attestor: TreAttestor;
      intervalMinutes: 15 | 30;
      propose?: (
        event: Parameters<NonNullable<ConstructorParameters<typeof HouseholdAgent>[0]['propose']>>[0],
      ) => BidProposal;
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
    this.agent = new HouseholdAgent({
      link: this.link,
      clock: opts.clock,
      stateDir: opts.stateDir,
      mode: opts.mode,
      propose: opts.propose,
      randomId: opts.randomId,
    });
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
      })) {
        this.sent.set(Date.parse(rec.intervalStart), rec.importWh);
        this.agent.recordInterval(rec);
      }
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
    this.sent.set(start, energy);
    this.agent.recordInterval({
      intervalStart: new Date(start).toISOString(),
      intervalMinutes: this.intervalMinutes,
      importWh: energy,
      exportWh: 0,
      importRegisterWh: register,
      exportRegisterWh: 0,
    });
  }

  async stop(): Promise<void> {
    await this.serial?.reader.stop();
    this.agent.stop();
    await this.link.stop();
    this.outbox.close();
  }
}
