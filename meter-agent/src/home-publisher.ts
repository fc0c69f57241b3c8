/**
 * Publishes what the household may see of itself to its own MQTT broker (agent.yaml `local`), for
 * Home Assistant: retained discovery configs (one per entity, sent when the entity first has a
 * value), retained JSON states, an availability topic with `offline` as the connection's will,
 * and the `dr-override` command. When Home Assistant says `online` on its status topic (it
 * restarted), every config and state is sent again after a short random delay. Meter readings
 * are sent at most every `publishEveryMs` (a P1 port sends a telegram every second). The TRE
 * link is a different connection: nothing published here reaches the TRE or any provider.
 */
import { type Clock, type HomeState, homeTopics, PendingTimers } from '@tre/protocol';
import mqtt, { type MqttClient } from 'mqtt';
import type { HomeBroker } from './comfort-sensors.js';
import { discoveryConfig, type EntitySpec, type HomeDevice, type HomeStateUpdate } from './home-assistant.js';

export interface HomePublisherOptions {
  broker: HomeBroker;
  discoveryPrefix: string;
  device: HomeDevice;
  publishEveryMs: number;
  clock: Clock;
  /** States read from the agent every `publishEveryMs` (bill, DR, trust); changed ones are sent. */
  poll?: () => HomeStateUpdate[];
  /** The household pressed "Override demand response" (Home Assistant's button, or any client). */
  onOverride?: () => void;
  /** Before re-sending after Home Assistant's birth message; default up to 3 s at random. */
  birthDelayMs?: () => number;
  /** Info lines: the broker lost or back; never a reading or an id. */
  log?: (line: string) => void;
}

export class HomePublisher {
  private client: MqttClient | undefined;
  private readonly timers: PendingTimers;
  /** The latest payload of each state, re-sent on every connect and Home Assistant birth. */
  private readonly states = new Map<HomeState, string>();
  /** Entity configs by object id (a config is sent when its entity first has a value). */
  private readonly entities = new Map<string, EntitySpec>();
  private pendingMeter: { entities: EntitySpec[]; state: Record<string, unknown> } | undefined;
  private meterSentAt = Number.NEGATIVE_INFINITY;
  private meterTimer = false;
  private down = false;

  constructor(private readonly opts: HomePublisherOptions) {
    this.timers = new PendingTimers(opts.clock);
  }

  private get node(): string {
    return this.opts.device.node;
  }

  start(): void {
    const { url, username, password, ca, cert, key } = this.opts.broker;
    const availability = homeTopics.availability(this.node);
    const client = mqtt.connect(url, {
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 5_000,
      connectTimeout: 10_000,
      will: { topic: availability, payload: Buffer.from('offline'), qos: 1, retain: true },
      ...(username !== undefined ? { username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(ca !== undefined ? { ca } : {}),
      ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    });
    this.client = client;
    if (this.opts.poll) this.pollLoop(this.opts.poll);
    const haStatus = homeTopics.haStatus(this.opts.discoveryPrefix);
    const override = homeTopics.command(this.node, 'dr-override');
    client.on('connect', () => {
      if (this.down) this.opts.log?.('home MQTT broker connected again; Home Assistant entities re-sent');
      this.down = false;
      client.subscribe([haStatus, override], { qos: 1 });
      this.sendAll();
    });
    const lost = (why: string) => {
      if (this.down || !this.client) return;
      this.down = true;
      this.opts.log?.(`home MQTT broker ${why}; publishing resumes when it is back`);
    };
    client.on('offline', () => lost('unreachable'));
    client.on('error', (err) => lost(`error (${(err as NodeJS.ErrnoException).code ?? err.name})`));
    client.on('message', (topic, payload, packet) => {
      const text = payload.toString('utf8');
      if (topic === haStatus && text === 'online' && !packet.retain) {
        const delay = this.opts.birthDelayMs?.() ?? Math.floor(Math.random() * 3_000);
        if (delay > 0) this.timers.after(delay, () => this.sendAll());
        else this.sendAll();
      } else if (topic === override && text === 'PRESS' && !packet.retain) {
        this.opts.onOverride?.();
      }
    });
  }

  /**
   * What the meter says now (`meterUpdate`), at the meter's time when it sent one; sent now, or
   * when `publishEveryMs` has passed since the last.
   */
  meter(
    { values, entities }: { values: Record<string, number>; entities: EntitySpec[] },
    atMs?: number,
  ): void {
    const at = new Date(atMs ?? this.opts.clock.now()).toISOString();
    this.pendingMeter = { entities, state: { ...values, at } };
    const wait = this.meterSentAt + this.opts.publishEveryMs - this.opts.clock.now();
    if (wait <= 0) this.flushMeter();
    else if (!this.meterTimer) {
      this.meterTimer = true;
      this.timers.after(wait, () => {
        this.meterTimer = false;
        this.flushMeter();
      });
    }
  }

  /** A state and the entities reading it (their configs are sent the first time); unchanged states are not re-sent. */
  publish({ state, payload, entities }: HomeStateUpdate): void {
    for (const entity of entities) this.announce(entity);
    const text = JSON.stringify(payload);
    if (this.states.get(state) !== text) this.send(state, text);
  }

  /** `offline` (retained), then disconnects. */
  async stop(): Promise<void> {
    this.timers.clear();
    this.meterTimer = false;
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    if (client.connected)
      await client
        .publishAsync(homeTopics.availability(this.node), 'offline', { qos: 1, retain: true })
        .catch(() => {});
    await client.endAsync();
  }

  /** Reads the polled states now (after a change the agent knows of, e.g. the TRE link's state). */
  refresh(): void {
    for (const update of this.opts.poll?.() ?? []) this.publish(update);
  }

  private pollLoop(poll: () => HomeStateUpdate[]): void {
    for (const update of poll()) this.publish(update);
    this.timers.after(this.opts.publishEveryMs, () => this.pollLoop(poll));
  }

  private flushMeter(): void {
    const pending = this.pendingMeter;
    if (!pending) return;
    this.pendingMeter = undefined;
    this.meterSentAt = this.opts.clock.now();
    this.publish({ state: 'meter', payload: pending.state, entities: pending.entities });
  }

  private announce(entity: EntitySpec): void {
    if (this.entities.has(entity.object)) return;
    this.entities.set(entity.object, entity);
    this.sendConfig(entity);
  }

  private sendConfig(entity: EntitySpec): void {
    const { topic, config } = discoveryConfig(this.opts.discoveryPrefix, this.opts.device, entity);
    if (this.client?.connected) this.client.publish(topic, JSON.stringify(config), { qos: 1, retain: true });
  }

  private send(state: HomeState, payload: string): void {
    this.states.set(state, payload);
    if (this.client?.connected)
      this.client.publish(homeTopics.state(this.node, state), payload, { qos: 1, retain: true });
  }

  /** Availability, every config, then every state (Home Assistant wants configs before states). */
  private sendAll(): void {
    const client = this.client;
    if (!client?.connected) return;
    client.publish(homeTopics.availability(this.node), 'online', { qos: 1, retain: true });
    for (const entity of this.entities.values()) this.sendConfig(entity);
    for (const [state, payload] of this.states)
      client.publish(homeTopics.state(this.node, state), payload, { qos: 1, retain: true });
  }
}
