/**
 * The policy sees the house: comfort sensors from a real topic on a real broker (mosquitto, or
 * aedes without it), a real 1-wire file and a real child process feed the household policy through
 * the bidder, as `meter-agent run` wires them. A cold house keeps its heat pump on; an unknown
 * sensor (stale, failing, retained, not configured) does too, and says why without its reading.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePolicy } from '@tre/hems-policy';
import { type DrEvent, ManualClock } from '@tre/protocol';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SensorConfig } from '../src/agent-config.js';
import { Bidder } from '../src/bidder.js';
import {
  ComfortSensors,
  parseCommandOutput,
  parseMqttPayload,
  parseW1Temperature,
} from '../src/comfort-sensors.js';
import { type HomeBrokerFixture, startHomeBroker } from './support/home-broker.js';

const T0 = Date.parse('2026-01-14T10:00:00.000Z');
const TOPIC = 'homeassistant/sensor/living_room_temperature/state';

/** A heat pump protected by a living-room minimum of 19.5 °C, and an EV charger that is not. */
const policy = parsePolicy(
  `mode: auto-bid
minPricePerMWh: 20000
maxReductionWh:
  perEvent: 3000
  perDay: 9000
loads:
  - name: heat-pump
    typicalPowerW: 2000
    actuator: relay:5
    maxOffMinutes: 60
    allowedWindows:
      - from: "00:00"
        to: "24:00"
  - name: ev-charger
    typicalPowerW: 7400
    actuator: relay:17
    maxOffMinutes: 60
    allowedWindows:
      - from: "00:00"
        to: "24:00"
comfort:
  - rule: min-indoor-temperature
    loads: [heat-pump]
    sensor: living-room
    minCelsius: 19.5
`,
  'policy.yaml',
);

function eventAt(clock: ManualClock, id = 'e-1'): DrEvent {
  const start = clock.now() + 2 * 3_600_000;
  return {
    v: 1,
    eventId: id,
    dsmId: 'dsm-1',
    windowStart: new Date(start).toISOString(),
    windowEnd: new Date(start + 3_600_000).toISOString(),
    bidDeadline: new Date(start - 3_600_000).toISOString(),
    acceptBy: new Date(start - 1_800_000).toISOString(),
    requestedReductionWh: 10_000,
    priceCapPerMWh: 300_000,
  };
}

let broker: HomeBrokerFixture;
let publisher: MqttClient;
const running: ComfortSensors[] = [];
beforeAll(async () => {
  broker = await startHomeBroker();
  publisher = await mqtt.connectAsync(broker.url, { protocolVersion: 4 });
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});
afterAll(async () => {
  await publisher?.endAsync();
  await broker?.stop();
});

/** The daemon's wiring: sensors -> bidder (with the safe default), on a manual clock. */
function household(sensors: Record<string, SensorConfig>) {
  const clock = new ManualClock(T0);
  const logged: string[] = [];
  const log = (line: string) => logged.push(line);
  const comfort = new ComfortSensors({ sensors, homeBroker: { url: broker.url }, clock, log });
  running.push(comfort);
  const bidder = new Bidder({ policy, timeZone: 'Europe/London', clock, sensors: comfort, log });
  const offered = () => {
    const proposal = bidder.propose(eventAt(clock));
    return 'bid' in proposal ? [...new Set(proposal.bid.loads.map((l) => l.name))] : [];
  };
  comfort.start();
  return { clock, comfort, offered, logged };
}

async function until(what: string, ok: () => boolean, poke?: () => Promise<unknown>): Promise<void> {
  for (const deadline = Date.now() + 5_000; !ok(); await new Promise((r) => setTimeout(r, 25))) {
    if (Date.now() > deadline) throw new Error(`${what} within 5 s`);
    await poke?.();
  }
}

/** Each kind of source, and how a test sets the temperature it reports. */
const sources: {
  kind: string;
  make(dir: string): { config: SensorConfig; set(celsius: number, s: ComfortSensors): Promise<void> };
}[] = [
  {
    kind: 'mqtt (bare number)',
    make: () => ({
      config: { source: 'mqtt', topic: TOPIC, maxAgeMinutes: 15 },
      set: (celsius, s) =>
        until(
          `an MQTT reading of ${celsius}`,
          () => s.readings()['living-room']?.celsius === celsius,
          () => publisher.publishAsync(TOPIC, String(celsius)),
        ),
    }),
  },
  {
    kind: 'mqtt (JSON field)',
    make: () => ({
      config: { source: 'mqtt', topic: `${TOPIC}/json`, field: 'attributes.temperature', maxAgeMinutes: 15 },
      set: (celsius, s) =>
        until(
          `an MQTT reading of ${celsius}`,
          () => s.readings()['living-room']?.celsius === celsius,
          () =>
            publisher.publishAsync(
              `${TOPIC}/json`,
              JSON.stringify({ state: 'on', attributes: { temperature: String(celsius) } }),
            ),
        ),
    }),
  },
  {
    kind: '1-wire temperature file',
    make: (dir) => {
      const path = join(dir, 'temperature');
      return {
        config: { source: 'w1', path, pollSeconds: 60, maxAgeMinutes: 15 },
        async set(celsius, s) {
          await writeFile(path, `${Math.round(celsius * 1000)}\n`);
          await s.readNow();
        },
      };
    },
  },
  {
    kind: '1-wire w1_slave file',
    make: (dir) => {
      const path = join(dir, 'w1_slave');
      return {
        config: { source: 'w1', path, pollSeconds: 60, maxAgeMinutes: 15 },
        async set(celsius, s) {
          const bytes = '72 01 4b 46 7f ff 0e 10 57';
          await writeFile(path, `${bytes} : crc=57 YES\n${bytes} t=${Math.round(celsius * 1000)}\n`);
          await s.readNow();
        },
      };
    },
  },
  {
    kind: 'command (a child process)',
    make: (dir) => {
      const path = join(dir, 'celsius');
      return {
        config: {
          source: 'command',
          command: ['cat', path],
          timeoutSeconds: 5,
          pollSeconds: 60,
          maxAgeMinutes: 15,
        },
        async set(celsius, s) {
          await writeFile(path, `${celsius}\n`);
          await s.readNow();
        },
      };
    },
  },
];

describe('comfort sensors feed the policy', () => {
  it.each(sources)('a cold house declines the heat-pump shed, a warm one bids it ($kind)', async (source) => {
    const { config, set } = source.make(await mkdtemp(join(tmpdir(), 'comfort-')));
    const { comfort, offered, clock } = household({ 'living-room': config });
    await set(18.25, comfort);
    expect(offered()).toEqual(['ev-charger']); // the rule holds the heat pump; the rest is still bid
    clock.advance(60_000);
    await set(21.5, comfort);
    expect(offered()).toEqual(['heat-pump', 'ev-charger']);
    // Just below the minimum counts as cold.
    clock.advance(60_000);
    await set(19.375, comfort);
    expect(offered()).toEqual(['ev-charger']);
  });
});

describe('an unknown sensor: the safe default', () => {
  /** The one line about the heat pump: names the sensor and why, never the reading or a household id. */
  function heatPumpLine(logged: string[]): string {
    const lines = logged.filter((l) => l.includes('heat-pump not offered'));
    expect(lines).toHaveLength(1);
    for (const line of logged) {
      expect(line).not.toMatch(/21[.,]5|21500|18[.,]25|m-0001|h1\b/);
      expect(line).not.toMatch(/\d+ ?Wh/);
    }
    return lines[0]!;
  }

  it('a reading older than maxAgeMinutes is unknown: the heat pump is not offered, and the log says why', async () => {
    const { config, set } = sources[0]!.make('');
    const { comfort, offered, clock, logged } = household({ 'living-room': config });
    await set(21.5, comfort);
    expect(offered()).toEqual(['heat-pump', 'ev-charger']);
    expect(logged.filter((l) => l.includes('not offered'))).toEqual([]);
    clock.advance(15 * 60_000 + 1);
    expect(comfort.state('living-room')).toEqual({ known: false, why: 'no reading in the last 15 min' });
    expect(offered()).toEqual(['ev-charger']);
    expect(heatPumpLine(logged)).toBe(
      'event e-1: heat-pump not offered: sensor living-room is unknown (no reading in the last 15 min), so its temperature rule cannot be checked',
    );
  });

  it('a failing read makes a warm sensor unknown at once: 1-wire CRC failure, power-on value', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'comfort-'));
    const { config, set } = sources[3]!.make(dir);
    const { comfort, offered, logged } = household({ 'living-room': config });
    await set(21.5, comfort);
    expect(offered()).toEqual(['heat-pump', 'ev-charger']);
    await writeFile(
      join(dir, 'w1_slave'),
      '72 01 4b 46 7f ff 0e 10 00 : crc=00 NO\n72 01 4b 46 7f ff 0e 10 00 t=21500\n',
    );
    await comfort.readNow();
    expect(offered()).toEqual(['ev-charger']);
    expect(heatPumpLine(logged)).toMatch(
      /sensor living-room is unknown \(its last read failed: the 1-wire CRC check failed\)/,
    );
    expect(logged).toContain(
      'sensor living-room: read failed (the 1-wire CRC check failed); it is unknown until it reads again',
    );
    await writeFile(
      join(dir, 'w1_slave'),
      '50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n',
    );
    await comfort.readNow();
    expect(comfort.state('living-room')).toMatchObject({
      known: false,
      why: expect.stringMatching(/power-on/),
    });
    await set(21.5, comfort);
    expect(logged.at(-1)).toBe('sensor living-room: reading again');
  });

  it('a command that hangs is killed after its timeout; one that prints no number fails', async () => {
    const { comfort, offered, logged } = household({
      'living-room': {
        source: 'command',
        command: ['sleep', '5'],
        timeoutSeconds: 1,
        pollSeconds: 60,
        maxAgeMinutes: 15,
      },
    });
    const started = Date.now();
    await comfort.readNow();
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(offered()).toEqual(['ev-charger']);
    expect(heatPumpLine(logged)).toMatch(/unknown \(its last read failed: it did not finish in 1 s\)/);

    const other = household({
      'living-room': {
        source: 'command',
        command: ['echo', 'unavailable'],
        timeoutSeconds: 5,
        pollSeconds: 60,
        maxAgeMinutes: 15,
      },
    });
    await other.comfort.readNow();
    expect(other.comfort.state('living-room')).toEqual({
      known: false,
      why: 'its last read failed: its output is not a number',
    });
    const failing = household({
      'living-room': {
        source: 'command',
        command: ['false'],
        timeoutSeconds: 5,
        pollSeconds: 60,
        maxAgeMinutes: 15,
      },
    });
    await failing.comfort.readNow();
    expect(failing.comfort.state('living-room')).toEqual({
      known: false,
      why: 'its last read failed: it exited with 1',
    });
    expect(failing.offered()).toEqual(['ev-charger']);
  });

  it('a retained MQTT value is of unknown age; a sensor with no source at all is unknown too', async () => {
    const topic = `${TOPIC}/retained`;
    await publisher.publishAsync(topic, '21.5', { retain: true });
    const { comfort, offered, logged } = household({
      'living-room': { source: 'mqtt', topic, maxAgeMinutes: 15 },
    });
    await until('the retained value to arrive', () => logged.some((l) => l.includes('retained')));
    expect(comfort.readings()).toEqual({});
    expect(offered()).toEqual(['ev-charger']);
    expect(heatPumpLine(logged)).toMatch(/sensor living-room is unknown \(no reading yet\)/);
    await publisher.publishAsync(topic, '', { retain: true }); // clears it on the broker

    const none = household({});
    expect(none.offered()).toEqual(['ev-charger']);
    expect(heatPumpLine(none.logged)).toMatch(
      /sensor living-room is unknown \(it has no source in agent\.yaml\)/,
    );
  });
});

describe('parsing the sources (pure)', () => {
  it('reads numbers, JSON fields, 1-wire files and command output, and refuses the rest', () => {
    expect(parseMqttPayload(' 21.5\n')).toEqual({ ok: true, celsius: 21.5 });
    expect(parseMqttPayload('unavailable')).toEqual({ ok: false, problem: 'the payload is not a number' });
    expect(parseMqttPayload('{"temperature":-3.5}', 'temperature')).toEqual({ ok: true, celsius: -3.5 });
    expect(parseMqttPayload('{"a":{"t":"19"}}', 'a.t')).toEqual({ ok: true, celsius: 19 });
    expect(parseMqttPayload('{"a":{}}', 'a.t')).toEqual({
      ok: false,
      problem: 'the payload has no field a.t',
    });
    expect(parseMqttPayload('{"t":null}', 't')).toEqual({ ok: false, problem: 'field t is not a number' });
    expect(parseMqttPayload('21.5', 't')).toEqual({ ok: false, problem: 'the payload has no field t' });
    expect(parseMqttPayload('oops', 't')).toEqual({ ok: false, problem: 'the payload is not JSON' });
    expect(parseMqttPayload('2150')).toMatchObject({ ok: false, problem: expect.stringMatching(/outside/) });
    expect(parseW1Temperature('21437\n')).toEqual({ ok: true, celsius: 21.437 });
    expect(parseW1Temperature('-1250\n')).toEqual({ ok: true, celsius: -1.25 });
    expect(parseW1Temperature('')).toMatchObject({ ok: false });
    expect(parseW1Temperature('85000\n')).toMatchObject({
      ok: false,
      problem: expect.stringMatching(/power-on/),
    });
    expect(parseW1Temperature('aa : crc=aa YES\naa t=19062\n')).toEqual({ ok: true, celsius: 19.062 });
    expect(parseW1Temperature('aa : crc=aa YES\naa\n')).toMatchObject({ ok: false });
    expect(parseCommandOutput('20.0\n')).toEqual({ ok: true, celsius: 20 });
    expect(parseCommandOutput('20.0 C\n')).toEqual({ ok: false, problem: 'its output is not a number' });
    expect(parseCommandOutput('')).toEqual({ ok: false, problem: 'its output is not a number' });
  });
});
