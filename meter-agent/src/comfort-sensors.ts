/**
 * Comfort sensors: the indoor temperatures the household policy's `min-indoor-temperature` rules
 * name (`sensor`), read from agent.yaml's `sensors`: a topic on the household's own MQTT broker
 * (e.g. Home Assistant's), a Linux 1-wire file, or a command's output. A sensor whose last read
 * failed, or whose last reading is older than its `maxAgeMinutes`, is unknown: it is left out of
 * the readings the policy sees. Parsing is pure (the `parse*` functions and `sensorState`); the
 * service owns the MQTT connection and the poll timers between `start()` and `stop()`. Log lines
 * name the sensor, never a reading.
 */
import { type ExecFileException, execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { SensorReading } from '@tre/hems-policy';
import { type Clock, PendingTimers } from '@tre/protocol';
import mqtt, { type MqttClient } from 'mqtt';
import type { SensorConfig } from './agent-config.js';

/** A temperature parsed from a source, or what was wrong (never the value itself). */
export type Parsed = { ok: true; celsius: number } | { ok: false; problem: string };

/** DS18B20's range; a value outside it is a wrong unit or garbage, not a room temperature. */
const PLAUSIBLE_CELSIUS = { min: -55, max: 125 } as const;
/** What a DS18B20 reports when it was read before it converted (its power-on reset value). */
const W1_POWER_ON_MILLI = 85_000;
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function plausible(celsius: number): Parsed {
  if (!Number.isFinite(celsius)) return { ok: false, problem: 'not a number' };
  if (celsius < PLAUSIBLE_CELSIUS.min || celsius > PLAUSIBLE_CELSIUS.max)
    return {
      ok: false,
      problem: `outside ${PLAUSIBLE_CELSIUS.min} to ${PLAUSIBLE_CELSIUS.max} °C (a wrong unit?)`,
    };
  return { ok: true, celsius };
}

function numberIn(text: string): number | undefined {
  const trimmed = text.trim();
  return NUMBER.test(trimmed) ? Number(trimmed) : undefined;
}

/**
 * An MQTT payload: the number itself (`21.5`), or with `field` a JSON object's field (dots for
 * nested fields, e.g. `attributes.temperature`) holding a number or a numeric string. Anything
 * else (Home Assistant's `unavailable`, say) is a failed read.
 */
export function parseMqttPayload(payload: string, field?: string): Parsed {
  if (field === undefined) {
    const n = numberIn(payload);
    return n === undefined ? { ok: false, problem: 'the payload is not a number' } : plausible(n);
  }
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return { ok: false, problem: 'the payload is not JSON' };
  }
  for (const key of field.split('.')) {
    if (typeof value !== 'object' || value === null || !Object.hasOwn(value, key))
      return { ok: false, problem: `the payload has no field ${field}` };
    value = (value as Record<string, unknown>)[key];
  }
  const n = typeof value === 'number' ? value : typeof value === 'string' ? numberIn(value) : undefined;
  return n === undefined ? { ok: false, problem: `field ${field} is not a number` } : plausible(n);
}

/**
 * A Linux 1-wire file: `temperature` (millidegrees Celsius, e.g. `21437`), or `w1_slave` (two
 * lines: the first ends in `crc=.. YES` when the read was good, the second in `t=21437`). The
 * DS18B20's power-on value (85 °C) means it was not read.
 */
export function parseW1Temperature(text: string): Parsed {
  let milli: number;
  if (text.includes('t=')) {
    const [first = '', second = ''] = text.split('\n');
    if (!/\bYES\s*$/.test(first)) return { ok: false, problem: 'the 1-wire CRC check failed' };
    const t = /\bt=(-?\d+)\s*$/.exec(second);
    if (!t) return { ok: false, problem: 'w1_slave has no t= value on its second line' };
    milli = Number(t[1]);
  } else {
    const trimmed = text.trim();
    if (!/^-?\d+$/.test(trimmed)) return { ok: false, problem: 'the file does not hold millidegrees' };
    milli = Number(trimmed);
  }
  if (milli === W1_POWER_ON_MILLI)
    return { ok: false, problem: 'the sensor reported its power-on value, not a reading' };
  return plausible(milli / 1000);
}

/** A command's standard output: one number, degrees Celsius (white space around it allowed). */
export function parseCommandOutput(stdout: string): Parsed {
  const n = numberIn(stdout);
  return n === undefined ? { ok: false, problem: 'its output is not a number' } : plausible(n);
}

/** The last read of a sensor: a temperature, or what went wrong; `at` in ms since the epoch. */
export type LastRead = { celsius: number; at: number } | { problem: string; at: number };

/** A sensor as the policy may use it: a fresh reading, or unknown and why (never a value). */
export type SensorState = { known: true; reading: SensorReading } | { known: false; why: string };

/** Whether the last read counts at `nowMs`: it must have succeeded and be at most `maxAgeMinutes` old. */
export function sensorState(last: LastRead | undefined, maxAgeMinutes: number, nowMs: number): SensorState {
  if (!last) return { known: false, why: 'no reading yet' };
  if ('problem' in last) return { known: false, why: `its last read failed: ${last.problem}` };
  if (nowMs - last.at > maxAgeMinutes * 60_000)
    return { known: false, why: `no reading in the last ${maxAgeMinutes} min` };
  return { known: true, reading: { celsius: last.celsius, at: new Date(last.at).toISOString() } };
}

/** Runs a command without a shell; SIGKILL after the timeout. */
function runCommand(argv: readonly string[], timeoutMs: number): Promise<Parsed> {
  const [program = '', ...args] = argv;
  return new Promise((resolve) => {
    execFile(
      program,
      args,
      { shell: false, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4096, windowsHide: true },
      (err: ExecFileException | null, stdout: string) => {
        if (!err) return resolve(parseCommandOutput(stdout));
        // Never err.message: it repeats the command's stderr, which may hold a reading.
        if (err.killed) return resolve({ ok: false, problem: `it did not finish in ${timeoutMs / 1000} s` });
        if (typeof err.code === 'number')
          return resolve({ ok: false, problem: `it exited with ${err.code}` });
        if (err.signal) return resolve({ ok: false, problem: `it was killed by ${err.signal}` });
        if (err.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER')
          return resolve({ ok: false, problem: 'its output is too long' });
        resolve({ ok: false, problem: `it could not run (${err.code ?? 'unknown error'})` });
      },
    );
  });
}

async function readW1(path: string): Promise<Parsed> {
  try {
    return parseW1Temperature(await readFile(path, 'utf8'));
  } catch (err) {
    return { ok: false, problem: `cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
  }
}

/** The household's own broker, as the daemon resolved it from `local` (password, CA and client key read). */
export interface HomeBroker {
  url: string;
  username?: string;
  password?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

export interface ComfortSensorsOptions {
  /** By the name the policy's temperature rules use. */
  sensors: Record<string, SensorConfig>;
  /** For `source: mqtt` sensors (agent.yaml requires `local` when there are any). */
  homeBroker?: HomeBroker;
  clock: Clock;
  /** Info lines: a sensor failing, reading again, its broker lost; never a reading or a household id. */
  log?: (line: string) => void;
}

export class ComfortSensors {
  private readonly last = new Map<string, LastRead>();
  private readonly reading = new Map<string, Promise<void>>();
  private readonly timers: PendingTimers;
  private client: MqttClient | undefined;
  private brokerDown = false;
  private stopped = false;

  constructor(private readonly opts: ComfortSensorsOptions) {
    this.timers = new PendingTimers(opts.clock);
  }

  /** The configured sensor names. */
  get names(): string[] {
    return Object.keys(this.opts.sensors);
  }

  /** Reads every file and command sensor now and on its timer; subscribes to the MQTT sensors. */
  start(): void {
    this.stopped = false;
    for (const [name, sensor] of Object.entries(this.opts.sensors))
      if (sensor.source !== 'mqtt') void this.pollLoop(name, sensor.pollSeconds);
    const topics = [
      ...new Set(Object.values(this.opts.sensors).flatMap((s) => (s.source === 'mqtt' ? [s.topic] : []))),
    ];
    if (topics.length > 0) this.subscribe(topics);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timers.clear();
    await Promise.all(this.reading.values());
    const client = this.client;
    this.client = undefined;
    await client?.endAsync(true);
  }

  /** Reads every file and command sensor once more, after any read already under way. */
  async readNow(): Promise<void> {
    await Promise.all(
      Object.entries(this.opts.sensors).map(async ([name, s]) => {
        if (s.source === 'mqtt') return;
        await this.reading.get(name);
        await this.read(name);
      }),
    );
  }

  /** A sensor now: `not configured` for a name agent.yaml does not list. */
  state(name: string): SensorState {
    const sensor = this.opts.sensors[name];
    if (!sensor) return { known: false, why: 'it has no source in agent.yaml' };
    return sensorState(this.last.get(name), sensor.maxAgeMinutes, this.opts.clock.now());
  }

  /** The fresh readings by sensor name, as the policy's context takes them; unknown sensors left out. */
  readings(): Record<string, SensorReading> {
    const out: Record<string, SensorReading> = {};
    for (const name of this.names) {
      const state = this.state(name);
      if (state.known) out[name] = state.reading;
    }
    return out;
  }

  private async pollLoop(name: string, pollSeconds: number): Promise<void> {
    await this.read(name);
    if (!this.stopped) this.timers.after(pollSeconds * 1000, () => void this.pollLoop(name, pollSeconds));
  }

  private read(name: string): Promise<void> {
    const running = this.reading.get(name);
    if (running) return running;
    const sensor = this.opts.sensors[name]!;
    const parsed =
      sensor.source === 'w1'
        ? readW1(sensor.path)
        : sensor.source === 'command'
          ? runCommand(sensor.command, sensor.timeoutSeconds * 1000)
          : Promise.resolve<Parsed>({ ok: false, problem: 'an MQTT sensor is not polled' });
    const done = parsed.then((p) => this.record(name, p)).finally(() => this.reading.delete(name));
    this.reading.set(name, done);
    return done;
  }

  private record(name: string, parsed: Parsed): void {
    if (this.stopped) return;
    const before = this.last.get(name);
    const at = this.opts.clock.now();
    const log = this.opts.log;
    if (parsed.ok) {
      this.last.set(name, { celsius: parsed.celsius, at });
      if (before && 'problem' in before) log?.(`sensor ${name}: reading again`);
      return;
    }
    this.last.set(name, { problem: parsed.problem, at });
    if (!before || !('problem' in before) || before.problem !== parsed.problem)
      log?.(`sensor ${name}: read failed (${parsed.problem}); it is unknown until it reads again`);
  }

  private subscribe(topics: string[]): void {
    if (!this.opts.homeBroker)
      throw new Error('source: mqtt sensors need the household broker (agent.yaml local)');
    const { url, username, password, ca, cert, key } = this.opts.homeBroker;
    const client = mqtt.connect(url, {
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 5_000,
      connectTimeout: 10_000,
      resubscribe: false, // subscribed on every connect below
      ...(username !== undefined ? { username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(ca !== undefined ? { ca } : {}),
      ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    });
    this.client = client;
    client.on('connect', () => {
      if (this.brokerDown) this.opts.log?.('home MQTT broker connected again');
      this.brokerDown = false;
      client.subscribe(topics, { qos: 0 }, (err) => {
        if (err) this.opts.log?.(`home MQTT broker refused the sensor subscriptions: ${err.name}`);
      });
    });
    const down = (why: string) => {
      if (this.brokerDown || this.stopped) return;
      this.brokerDown = true;
      this.opts.log?.(`home MQTT broker ${why}; its sensors become unknown after their maxAgeMinutes`);
    };
    client.on('offline', () => down('unreachable'));
    client.on('error', (err) => down(`error (${(err as NodeJS.ErrnoException).code ?? err.name})`));
    client.on('message', (topic, payload, packet) => {
      for (const [name, sensor] of Object.entries(this.opts.sensors)) {
        if (sensor.source !== 'mqtt' || sensor.topic !== topic) continue;
        // A retained message is delivered on subscribing, however old it is: its age is unknown.
        if (packet.retain) {
          this.opts.log?.(
            `sensor ${name}: ignored a retained value of unknown age; waiting for the next one`,
          );
          continue;
        }
        this.record(name, parseMqttPayload(payload.toString('utf8'), sensor.field));
      }
    });
  }
}
