/**
 * The agent's configuration file (`/etc/meter-agent/agent.yaml`), checked with zod; every error
 * names file:line:column and what would be valid. Unknown keys are errors.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ID_PATTERN } from '@tre/protocol';
import { isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { crlBeside } from './tre-attestor.js';

/** Where the installed agent's configuration lives (the CLI's `--config` default). */
export const DEFAULT_CONFIG_PATH = '/etc/meter-agent/agent.yaml';

/** How long a comfort sensor's reading counts; older (or a failed read) and the sensor is unknown. */
const sensorAge = {
  maxAgeMinutes: z
    .number()
    .int()
    .min(1)
    .max(24 * 60)
    .default(15),
};
/** Sources read on a timer (1-wire files, commands). */
const polledSensor = {
  ...sensorAge,
  pollSeconds: z.number().int().min(5).max(3600).default(60),
};
const readsBeforeStale = (s: { pollSeconds: number; maxAgeMinutes: number }, ctx: z.RefinementCtx) => {
  if (s.pollSeconds >= s.maxAgeMinutes * 60)
    ctx.addIssue({
      code: 'custom',
      path: ['pollSeconds'],
      message: `must be shorter than maxAgeMinutes (${s.maxAgeMinutes * 60} s), or every reading goes stale before the next`,
    });
};

/**
 * One comfort sensor (a temperature in degrees Celsius), by the name the household policy's
 * `min-indoor-temperature` rules give as `sensor`.
 */
export const sensorConfigSchema = z.discriminatedUnion(
  'source',
  [
    z.strictObject({
      /** A topic on the household's own broker (`homeMqtt`), e.g. Home Assistant's. */
      source: z.literal('mqtt'),
      topic: z.string().regex(/^[^#+]+$/, 'a topic without wildcards (+ or #)'),
      /** The JSON payload's field (dots for nested fields); omitted: the payload is the number. */
      field: z.string().min(1).optional(),
      ...sensorAge,
    }),
    z
      .strictObject({
        /** A Linux 1-wire file: `/sys/bus/w1/devices/28-<id>/temperature` (millidegrees) or its `w1_slave`. */
        source: z.literal('w1'),
        path: z.string().min(1),
        ...polledSensor,
      })
      .superRefine(readsBeforeStale),
    z
      .strictObject({
        /** A program and its arguments (run without a shell) that prints degrees Celsius. */
        source: z.literal('command'),
        command: z.array(z.string().min(1)).min(1),
        timeoutSeconds: z.number().int().min(1).max(60).default(10),
        ...polledSensor,
      })
      .superRefine(readsBeforeStale),
  ],
  { error: 'source must be mqtt, w1 or command' },
);
export type SensorConfig = z.infer<typeof sensorConfigSchema>;

export const agentConfigSchema = z.strictObject({
  /** This household's meter id, as in its certificate (urn:tre:meter:<id>). */
  meterId: z
    .string()
    .regex(ID_PATTERN, 'meterId must be 1-64 characters of a-z 0-9 . _ - (as in the certificate)'),
  tre: z.strictObject({
    /** TRE endpoints in failover order, e.g. mqtts://tre.local:8883. */
    endpoints: z
      .array(z.string().regex(/^mqtts:\/\/[^/]+:\d+$/, 'an endpoint looks like mqtts://host:port'))
      .min(1),
    ca: z.string().min(1),
    /** The regulator's CRL (PEM), re-read on every attestation; default `crl.pem` next to `ca`. */
    crl: z.string().min(1).optional(),
    cert: z.string().min(1),
    key: z.string().min(1),
    /** The regulator-signed attestation whitelist (JWS). Attestation is mandatory. */
    attestationPolicy: z.string().min(1),
    attestEveryMinutes: z
      .number()
      .int()
      .min(1)
      .max(24 * 60)
      .default(15),
  }),
  meter: z.strictObject({
    /** Serial device of the P1 cable or optical head, e.g. /dev/ttyUSB0. */
    port: z.string().min(1),
    protocol: z.enum(['dsmr', 'iec62056-21']).default('dsmr'),
    /** Serial framing: DSMR 4/5 115200 8N1; DSMR 2.2/3 9600 7E1. */
    framing: z.enum(['115200-8N1', '9600-7E1']).default('115200-8N1'),
    /** IEC 62056-21 (optical head, mode C): seconds between readouts. */
    pollSeconds: z.number().int().min(10).max(900).default(60),
    /** IANA time zone of the meter, e.g. Europe/Amsterdam (interval boundaries are local wall-clock). */
    timeZone: z.string().min(1).default('UTC'),
    intervalMinutes: z.union([z.literal(15), z.literal(30)], { error: 'must be 15 or 30' }).default(15),
  }),
  /** The household bidding policy (hems-policy YAML). Without one the agent never bids. */
  policy: z.string().min(1).optional(),
  /** Comfort sensors by name (the `sensor` of the policy's temperature rules). */
  sensors: z
    .record(z.string().min(1).max(64), sensorConfigSchema, {
      error: 'must be a mapping of sensor name to its source',
    })
    .default({}),
  /** The household's own MQTT broker (e.g. Home Assistant's) for `source: mqtt` sensors; never the TRE. */
  homeMqtt: z
    .strictObject({
      url: z
        .string()
        .regex(
          /^mqtts?:\/\/[^/\s@]+$/,
          'a URL such as mqtt://127.0.0.1:1883 (no user name or password in it: use username and passwordFile)',
        ),
      username: z.string().min(1).optional(),
      /** A file holding the password (its first line). */
      passwordFile: z.string().min(1).optional(),
      /** For mqtts:// with a certificate not from a public CA: the CA certificate (PEM). */
      ca: z.string().min(1).optional(),
    })
    .default({ url: 'mqtt://127.0.0.1:1883' }),
  /** Where the outbox, pending bids and status live. */
  stateDir: z.string().min(1).default('/var/lib/meter-agent'),
  io: z
    .strictObject({
      /** johnny-five IO plugin module, e.g. raspi-io; `none` disables load control. */
      plugin: z.string().min(1).default('none'),
      statusLedPin: z.number().int().min(0).max(63).optional(),
    })
    .default({ plugin: 'none' }),
});
export type AgentConfig = z.infer<typeof agentConfigSchema>;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG_INVALID';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

/** Parses YAML text against a zod schema; errors carry file:line:col of the offending node. */
export function parseYamlWith<S extends z.ZodType>(text: string, file: string, schema: S): z.infer<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        return `${file}:${pos?.line ?? 1}:${pos?.col ?? 1}: ${e.message.split('\n')[0]}`;
      }),
    );
  }
  const parsed = schema.safeParse(doc.toJS());
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((issue) => {
      const keys = issue.code === 'unrecognized_keys' ? issue.keys : [];
      const path = [...issue.path, ...(keys.length ? [keys[0]!] : [])] as (string | number)[];
      const node = nodeAt(doc.contents, path, keys.length > 0);
      const offset = node?.range?.[0] ?? 0;
      const { line, col } = lineCounter.linePos(offset);
      const where = path.length ? path.join('.') : '(top level)';
      const what =
        issue.code === 'unrecognized_keys'
          ? `unknown key ${keys.map((k) => JSON.stringify(k)).join(', ')}`
          : issue.message;
      return `${file}:${line}:${col}: ${where}: ${what}`;
    }),
  );
}

type YamlNode = { range?: [number, number, number] | null } | null | undefined;

function nodeAt(root: unknown, path: (string | number)[], keyNode: boolean): YamlNode {
  let node = root as YamlNode;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && p.key.value === seg);
      if (!pair) return node;
      node = (keyNode && i === path.length - 1 ? pair.key : (pair.value ?? pair.key)) as YamlNode;
    } else if (isSeq(node) && typeof seg === 'number') {
      node = (node.items[seg] ?? node) as YamlNode;
    } else return node;
  }
  return node;
}

/** Reads and checks a config file; relative paths in it resolve against the file's directory. */
export function loadAgentConfig(path: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new ConfigError([`${path}: cannot read the configuration file`]);
  }
  const config = parseYamlWith(text, path, agentConfigSchema);
  const base = dirname(resolve(path));
  const abs = (p: string) => resolve(base, p);
  return {
    ...config,
    tre: {
      ...config.tre,
      ca: abs(config.tre.ca),
      crl: config.tre.crl ? abs(config.tre.crl) : crlBeside(abs(config.tre.ca)),
      cert: abs(config.tre.cert),
      key: abs(config.tre.key),
      attestationPolicy: abs(config.tre.attestationPolicy),
    },
    policy: config.policy && abs(config.policy),
    sensors: Object.fromEntries(
      Object.entries(config.sensors).map(([name, sensor]) => [name, resolveSensorPaths(sensor, abs)]),
    ),
    homeMqtt: {
      ...config.homeMqtt,
      ...(config.homeMqtt.passwordFile ? { passwordFile: abs(config.homeMqtt.passwordFile) } : {}),
      ...(config.homeMqtt.ca ? { ca: abs(config.homeMqtt.ca) } : {}),
    },
    stateDir: abs(config.stateDir),
  };
}

/** A 1-wire path, and a command given by a path (not a bare name found on PATH), resolve like the rest. */
function resolveSensorPaths(sensor: SensorConfig, abs: (p: string) => string): SensorConfig {
  switch (sensor.source) {
    case 'mqtt':
      return sensor;
    case 'w1':
      return { ...sensor, path: abs(sensor.path) };
    case 'command': {
      const [program = '', ...args] = sensor.command;
      return { ...sensor, command: [program.includes('/') ? abs(program) : program, ...args] };
    }
  }
}
