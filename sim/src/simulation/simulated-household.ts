/**
 * One simulated household running the real agent code in-process: its meter (seeded load profile),
 * the durable outbox, the TRE link (mTLS MQTT) and the household agent with its policy.
 */
import { join } from 'node:path';
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
  closeInterval(t: number): void {
    this.meter.advanceTo(t);
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
    this.agent.stop();
    await this.link.stop();
    this.outbox.close();
  }
}
