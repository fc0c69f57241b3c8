/**
 * The household's own data at home: the agent publishes to the household's broker (Debian's real
 * mosquitto, or aedes without it) and a client subscribes as Home Assistant does. Each discovery
 * config is checked field by field against what HA's energy dashboard needs (energy +
 * total_increasing in kWh, power + measurement in W, gas in m³), the retained configs reach a
 * subscriber that comes later (HA restarting), the last will says offline when the agent's
 * connection dies, HA's birth message brings every config again, and the override button reaches
 * the agent.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dsmrSnapshot, parseDsmrTelegram, TelegramFramer } from '@tre/hardware';
import { ManualClock } from '@tre/protocol';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type EntitySpec,
  intervalUpdate,
  meterEntity,
  meterUpdate,
  statusStates,
} from '../src/home-assistant.js';
import { HomePublisher } from '../src/home-publisher.js';
import type { AgentStatus } from '../src/household-agent.js';
import { type HomeBrokerFixture, startHomeBroker } from './support/home-broker.js';

/** Each test its own device: retained messages of one test are not another's. */
let NODE = 'm-0';
let tests = 0;
const T0 = Date.parse('2026-03-02T09:00:00.000Z');

let broker: HomeBrokerFixture;
const clients: MqttClient[] = [];
const publishers: HomePublisher[] = [];
beforeAll(async () => {
  broker = await startHomeBroker();
});
beforeEach(() => {
  NODE = `m-${++tests}`;
});
afterEach(async () => {
  for (const p of publishers.splice(0)) await p.stop();
  for (const c of clients.splice(0)) await c.endAsync(true);
});
afterAll(async () => {
  await broker?.stop();
});

interface Received {
  topic: string;
  payload: string;
  retain: boolean;
}

/** A client subscribed as Home Assistant is: discovery and the agent's topics. */
async function homeAssistant(): Promise<{ client: MqttClient; messages: Received[] }> {
  const client = await mqtt.connectAsync(broker.url, { protocolVersion: 4, clean: true });
  clients.push(client);
  const messages: Received[] = [];
  client.on('message', (topic, payload, packet) =>
    messages.push({ topic, payload: payload.toString('utf8'), retain: packet.retain }),
  );
  await client.subscribeAsync(['homeassistant/#', 'meter-agent/#'], { qos: 1 });
  return { client, messages };
}

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 5_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = fn();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function lastOn(messages: Received[], topic: string): Received | undefined {
  return messages.filter((m) => m.topic === topic).at(-1);
}

/** The value HA's template `{{ value_json.<field> }}` reads from a state payload. */
function templateValue(template: string, statePayload: string): unknown {
  const field = /^\{\{ value_json\.([a-z0-9_]+) \}\}$/.exec(template)?.[1];
  if (!field) throw new Error(`unexpected template ${template}`);
  return (JSON.parse(statePayload) as Record<string, unknown>)[field];
}

function publisher(clock: ManualClock, extra: Partial<ConstructorParameters<typeof HomePublisher>[0]> = {}) {
  const p = new HomePublisher({
    broker: { url: broker.url },
    discoveryPrefix: 'homeassistant',
    device: { node: NODE, version: '9.9.9' },
    publishEveryMs: 10_000,
    clock,
    birthDelayMs: () => 0,
    ...extra,
  });
  publishers.push(p);
  return p;
}

const METER_VALUES = {
  energy_import: 1234.567,
  energy_export: 89.012,
  energy_import_t1: 1000.5,
  energy_import_t2: 234.067,
  power_import: 1520,
  power_export: 0,
  voltage_l1: 229.8,
  current_l1: 6.61,
  power_import_l1: 1520,
  gas: 4321.987,
  water: 12.5,
};
const entitiesOf = (values: Record<string, number>): EntitySpec[] =>
  Object.keys(values).map((k) => meterEntity(k)!);

describe('Home Assistant discovery on the household broker', () => {
  it("announces each meter entity as HA's energy dashboard needs it, field by field", async () => {
    const clock = new ManualClock(T0);
    const ha = await homeAssistant();
    const p = publisher(clock);
    p.start();
    await until('availability online', () => lastOn(ha.messages, `meter-agent/${NODE}/availability`));
    p.meter({ values: METER_VALUES, entities: entitiesOf(METER_VALUES) });
    const state = await until('meter state', () => lastOn(ha.messages, `meter-agent/${NODE}/meter`));
    expect(state.retain).toBe(false); // live delivery; retained on the broker (checked below)

    const config = async (object: string) => {
      const m = await until(`config of ${object}`, () =>
        lastOn(ha.messages, `homeassistant/sensor/${NODE}_${object}/config`),
      );
      return JSON.parse(m.payload) as Record<string, unknown>;
    };
    const common = {
      unique_id: expect.stringMatching(new RegExp(`^${NODE}_`)),
      state_topic: `meter-agent/${NODE}/meter`,
      availability_topic: `meter-agent/${NODE}/availability`,
      payload_available: 'online',
      payload_not_available: 'offline',
      device: {
        identifiers: [`meter-agent_${NODE}`],
        name: 'Smart meter',
        manufacturer: 'tre-stack',
        model: 'meter-agent',
        sw_version: '9.9.9',
      },
      origin: { name: 'meter-agent', sw: '9.9.9' },
    };
    const registers = {
      energy_import: 'Energy import',
      energy_export: 'Energy export',
      energy_import_t1: 'Energy import tariff 1',
      energy_import_t2: 'Energy import tariff 2',
    };
    for (const [object, name] of Object.entries(registers)) {
      const c = await config(object);
      expect(c).toEqual({
        ...common,
        name,
        unique_id: `${NODE}_${object}`,
        value_template: `{{ value_json.${object} }}`,
        device_class: 'energy',
        state_class: 'total_increasing',
        unit_of_measurement: 'kWh',
        suggested_display_precision: 3,
      });
      expect(templateValue(c.value_template as string, state.payload)).toBe(
        METER_VALUES[object as keyof typeof METER_VALUES],
      );
    }
    for (const object of ['power_import', 'power_export', 'power_import_l1']) {
      const c = await config(object);
      expect(c).toMatchObject({
        ...common,
        device_class: 'power',
        state_class: 'measurement',
        unit_of_measurement: 'W',
      });
      expect(c).not.toHaveProperty('last_reset_value_template');
    }
    expect(await config('voltage_l1')).toMatchObject({
      device_class: 'voltage',
      state_class: 'measurement',
      unit_of_measurement: 'V',
    });
    expect(await config('current_l1')).toMatchObject({
      device_class: 'current',
      state_class: 'measurement',
      unit_of_measurement: 'A',
    });
    const gas = await config('gas');
    // The superscript: HA's energy dashboard refuses `m3`.
    expect(gas).toMatchObject({
      ...common,
      name: 'Gas',
      device_class: 'gas',
      state_class: 'total_increasing',
      unit_of_measurement: 'm³',
    });
    expect(templateValue(gas.value_template as string, state.payload)).toBe(4321.987);
    expect(await config('water')).toMatchObject({
      device_class: 'water',
      state_class: 'total_increasing',
      unit_of_measurement: 'm³',
    });

    // Every config is retained: HA started later (or restarted) gets them and the last state.
    const later = await homeAssistant();
    const retained = await until('retained configs', () => {
      const configs = later.messages.filter((m) => m.retain && m.topic.endsWith('/config'));
      return configs.length >= Object.keys(METER_VALUES).length ? configs : undefined;
    });
    expect(new Set(retained.map((m) => m.topic)).size).toBe(Object.keys(METER_VALUES).length);
    const retainedState = await until('retained state', () =>
      later.messages.find((m) => m.retain && m.topic === `meter-agent/${NODE}/meter`),
    );
    expect(JSON.parse(retainedState.payload)).toMatchObject(METER_VALUES);
    expect(lastOn(later.messages, `meter-agent/${NODE}/availability`)).toMatchObject({
      payload: 'online',
      retain: true,
    });
  });

  it('sends meter readings at most every publishEveryMs, the latest one', async () => {
    const clock = new ManualClock(T0);
    const ha = await homeAssistant();
    const p = publisher(clock);
    p.start();
    await until('availability', () => lastOn(ha.messages, `meter-agent/${NODE}/availability`));
    const states = () => ha.messages.filter((m) => m.topic === `meter-agent/${NODE}/meter` && !m.retain);
    for (let w = 100; w <= 500; w += 100) {
      p.meter({ values: { power_import: w }, entities: [meterEntity('power_import')!] });
      clock.advance(1_000);
    }
    await until('first state', () => (states().length === 1 ? true : undefined));
    clock.advance(5_000); // 10 s after the first: the latest (500 W) goes out, once
    await until('second state', () => (states().length === 2 ? true : undefined));
    expect(states().map((m) => JSON.parse(m.payload).power_import)).toEqual([100, 500]);
  });

  it('publishes the interval, the running bill, DR and the TRE trust with their entities', async () => {
    const clock = new ManualClock(T0);
    const ha = await homeAssistant();
    const status: AgentStatus = {
      version: '9.9.9',
      trust: 'trusted',
      lastInterval: null,
      outboxDepth: 0,
      runningBill: { periodStart: '2026-03-01T00:00:00.000Z', totalMinor: 1234, currency: 'GBP' },
      statements: 0,
      openEvents: ['ev-1'],
      proposals: [
        {
          bidId: 'b1',
          eventId: 'ev-1',
          windowStart: '2026-03-02T08:30:00.000Z',
          bidDeadline: '2026-03-02T08:00:00.000Z',
          quantityWh: 1500,
          pricePerMWh: 90_000,
          loads: [
            {
              name: 'heat-pump',
              actuator: 'relay:5',
              from: '2026-03-02T08:30:00.000Z',
              to: '2026-03-02T09:30:00.000Z',
            },
          ],
          status: 'accepted',
        },
      ],
      rejectedSignatures: 0,
      actuatorFailures: 0,
      updatedAt: new Date(T0).toISOString(),
    };
    const p = publisher(clock, { poll: () => statusStates(status, clock.now()) });
    p.start();
    p.publish(
      intervalUpdate({
        intervalStart: '2026-03-02T08:45:00.000Z',
        intervalMinutes: 15,
        importWh: 312,
        exportWh: 0,
        importRegisterWh: 1_234_567,
        exportRegisterWh: 89_012,
      }),
    );
    const cfg = async (component: string, object: string) =>
      JSON.parse(
        (
          await until(object, () =>
            lastOn(ha.messages, `homeassistant/${component}/${NODE}_${object}/config`),
          )
        ).payload,
      ) as Record<string, unknown>;
    const state = async (name: string) =>
      JSON.parse(
        (await until(name, () => lastOn(ha.messages, `meter-agent/${NODE}/${name}`))).payload,
      ) as Record<string, unknown>;
    expect(await cfg('sensor', 'interval_import')).toMatchObject({
      device_class: 'energy',
      state_class: 'total',
      unit_of_measurement: 'kWh',
      last_reset_value_template: '{{ value_json.start }}',
    });
    expect(await state('interval')).toEqual({
      start: '2026-03-02T08:45:00.000Z',
      end: '2026-03-02T09:00:00.000Z',
      interval_import: 0.312,
      interval_export: 0,
    });
    expect(await cfg('sensor', 'bill')).toMatchObject({
      device_class: 'monetary',
      state_class: 'total',
      unit_of_measurement: 'GBP',
      last_reset_value_template: '{{ value_json.period_start }}',
    });
    expect(await state('bill')).toMatchObject({ bill: 12.34, currency: 'GBP' });
    expect(await cfg('sensor', 'dr_state')).toMatchObject({
      device_class: 'enum',
      options: ['none', 'offered', 'bid', 'accepted', 'shedding', 'overridden'],
      json_attributes_topic: `meter-agent/${NODE}/dr`,
    });
    expect(await state('dr')).toMatchObject({ dr_state: 'shedding', dr_open_events: 1 });
    expect(await cfg('sensor', 'tre_trust')).toMatchObject({
      device_class: 'enum',
      entity_category: 'diagnostic',
    });
    expect(await state('tre')).toEqual({ tre_trust: 'trusted' });
    expect(await cfg('button', 'dr_override')).toMatchObject({
      command_topic: `meter-agent/${NODE}/dr-override/set`,
      payload_press: 'PRESS',
    });
    // After the window the shed is over.
    clock.advance(31 * 60_000);
    await until('dr none', () =>
      ha.messages.some(
        (m) => m.topic === `meter-agent/${NODE}/dr` && JSON.parse(m.payload).dr_state === 'none',
      )
        ? true
        : undefined,
    );
  });

  it('says offline by its last will when the connection dies, and everything again on HA birth', async () => {
    const clock = new ManualClock(T0);
    const ha = await homeAssistant();
    let overrides = 0;
    const p = publisher(clock, { onOverride: () => overrides++ });
    p.start();
    p.meter({ values: { power_import: 700 }, entities: [meterEntity('power_import')!] });
    const topic = `homeassistant/sensor/${NODE}_power_import/config`;
    await until('config', () => lastOn(ha.messages, topic));

    await ha.client.publishAsync('homeassistant/status', 'online', { qos: 1 });
    await until('config again after the birth message', () =>
      ha.messages.filter((m) => m.topic === topic).length >= 2 ? true : undefined,
    );
    await ha.client.publishAsync(`meter-agent/${NODE}/dr-override/set`, 'PRESS', { qos: 1 });
    await until('override', () => (overrides === 1 ? true : undefined));

    // The agent dies: its TCP connection drops without DISCONNECT; the broker sends the will.
    const agentClient = (p as unknown as { client: MqttClient }).client;
    agentClient.options.reconnectPeriod = 0;
    agentClient.stream.destroy();
    const offline = await until('will', () => {
      const m = lastOn(ha.messages, `meter-agent/${NODE}/availability`);
      return m?.payload === 'offline' ? m : undefined;
    });
    expect(offline.payload).toBe('offline');
    const later = await homeAssistant();
    const retained = await until('retained availability', () =>
      lastOn(later.messages, `meter-agent/${NODE}/availability`),
    );
    expect(retained).toMatchObject({ payload: 'offline', retain: true });
  });
});

const CAPTURES = fileURLToPath(new URL('../../../shared/meter-captures/dsmr/', import.meta.url));
const present = existsSync(`${CAPTURES}expected.json`);
if (!present)
  console.warn(`real meter captures not found (${CAPTURES}): their Home Assistant tests are skipped`);

/** A real capture as the serial port delivers it, to the values Home Assistant gets. */
function capture(name: string) {
  const [frame] = new TelegramFramer().push(readFileSync(`${CAPTURES}${name}`));
  const parsed = parseDsmrTelegram(frame!);
  if (!parsed.ok) throw new Error(`${name}: ${parsed.reason}`);
  return meterUpdate(dsmrSnapshot(parsed.telegram));
}

describe.runIf(present)('Home Assistant values of real meter captures', () => {
  const expected = JSON.parse(readFileSync(`${CAPTURES}expected.json`, 'utf8')) as Record<
    string,
    { import: number[]; export: number[] }
  >;
  it.each(Object.keys(expected))('%s: registers per tariff in kWh, each with its energy entity', (name) => {
    const { values, entities } = capture(name);
    const e = expected[name]!;
    expect([values.energy_import_t1, values.energy_import_t2]).toEqual(e.import.map((wh) => wh / 1000));
    expect([values.energy_export_t1, values.energy_export_t2]).toEqual(e.export.map((wh) => wh / 1000));
    expect(entities.map((x) => x.object).sort()).toEqual(Object.keys(values).sort());
    for (const entity of entities.filter((x) => x.object.startsWith('energy_')))
      expect(entity).toMatchObject({ deviceClass: 'energy', stateClass: 'total_increasing', unit: 'kWh' });
  });
  it('Belgian meter: gas (24.2.3) and water told apart by device type, in m³; capacity-tariff demand in W', () => {
    const { values, entities } = capture('telegram_fluvius_v171.txt');
    expect(values).toMatchObject({ gas: 112.384, water: 872.234 });
    expect(entities.find((x) => x.object === 'gas')).toMatchObject({ deviceClass: 'gas', unit: 'm³' });
    expect(entities.find((x) => x.object === 'water')).toMatchObject({ deviceClass: 'water', unit: 'm³' });
    expect(values.demand_peak_month).toBeGreaterThan(0);
    expect(entities.find((x) => x.object === 'demand_peak_month')).toMatchObject({
      deviceClass: 'power',
      unit: 'W',
    });
  });
  it('two gas meters on two M-Bus channels are two entities', () => {
    const { values } = capture('telegram_v5_two_mbus.txt');
    expect(values).toMatchObject({ gas_1: 0, gas_2: 246.138 });
    expect(values).not.toHaveProperty('gas');
  });
  it('per-phase values, power failures and sags/swells (Iskra AM550)', () => {
    const { values, entities } = capture('telegram_iskra_am550_v50_failure_log.txt');
    expect(values).toMatchObject({
      voltage_l1: 236,
      voltage_l2: 232.6,
      voltage_l3: 235.1,
      current_l1: 2,
      power_export: 498,
      power_export_l1: 676,
      power_import_l3: 132,
      power_failures: 6,
      power_failures_long: 3,
    });
    expect(entities.find((x) => x.object === 'power_failures')).toMatchObject({ diagnostic: true });
  });
});
