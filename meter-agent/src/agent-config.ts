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
      /** A topic on the household's own broker (`local`), e.g. Home Assistant's. */
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

/** `local`: the household's own broker and what the agent publishes there. */
export const localBrokerSchema = z
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
    /** A client certificate and its key (PEM), for a broker that wants them. */
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    /** Publish the household's own data there (false: the broker only feeds `source: mqtt` sensors). */
    publish: z.boolean().default(true),
    /** Home Assistant's discovery prefix (its MQTT integration's setting). */
    discoveryPrefix: z
      .string()
      .regex(/^[^#+\s]+$/, 'a topic prefix without wildcards or spaces')
      .default('homeassistant'),
    /** The device's topic name (`meter-agent/<nodeId>/...`) and HA unique-id prefix; default from meterId. */
    nodeId: z
      .string()
      .regex(/^[a-zA-Z0-9_-]{1,64}$/, '1-64 characters of a-z A-Z 0-9 _ - (as Home Assistant allows)')
      .optional(),
    /** Meter readings (power, registers) are published at most this often; a P1 port sends every second. */
    publishEverySeconds: z.number().int().min(1).max(3600).default(10),
  })
  .superRefine((local, ctx) => {
    if ((local.cert === undefined) !== (local.key === undefined))
      ctx.addIssue({
        code: 'custom',
        path: [local.cert ? 'key' : 'cert'],
        message: 'cert and key go together',
      });
  });

export const agentConfigSchema = z
  .strictObject({
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
    meter: z
      .strictObject({
        /** Serial device of the P1 cable or optical head, e.g. /dev/ttyUSB0. */
        port: z.string().min(1),
        /** dsmr: P1 cable; sml: IR head on a German SML meter; iec62056-21: optical head, mode C. */
        protocol: z.enum(['dsmr', 'sml', 'iec62056-21']).default('dsmr'),
        /**
         * Serial framing. Default for dsmr 115200-8N1 (DSMR 4/5; DSMR 2.2/3: 9600-7E1), for sml
         * 9600-8N1 (some IR interfaces 2400 or 19200); mode C negotiates its own.
         */
        framing: z.enum(['115200-8N1', '9600-7E1', '9600-8N1', '2400-8N1', '19200-8N1']).optional(),
        /** IEC 62056-21 (optical head, mode C): seconds between readouts. */
        pollSeconds: z.number().int().min(10).max(900).default(60),
        /** IANA time zone of the meter, e.g. Europe/Amsterdam (interval boundaries are local wall-clock). */
        timeZone: z.string().min(1).default('UTC'),
        intervalMinutes: z.union([z.literal(15), z.literal(30)], { error: 'must be 15 or 30' }).default(15),
      })
      .superRefine((meter, ctx) => {
        if (meter.protocol === 'sml' && meter.framing?.endsWith('-7E1'))
          ctx.addIssue({
            code: 'custom',
            path: ['framing'],
            message: 'sml is 8N1: 9600-8N1, 2400-8N1 or 19200-8N1',
          });
      }),
    /** The household bidding policy (hems-policy YAML). Without one the agent never bids. */
    policy: z.string().min(1).optional(),
    /** Comfort sensors by name (the `sensor` of the policy's temperature rules). */
    sensors: z
      .record(z.string().min(1).max(64), sensorConfigSchema, {
        error: 'must be a mapping of sensor name to its source',
      })
      .default({}),
    /**
     * The household's own MQTT broker (the one Home Assistant uses): `source: mqtt` sensors are read
     * from it, and the household's own readings, bill, DR events and TRE trust are published to it
     * with Home Assistant discovery. Nothing of it goes to the TRE or any provider.
     */
    local: localBrokerSchema.optional(),
    /** Where the outbox, pending bids and status live. */
    stateDir: z.string().min(1).default('/var/lib/meter-agent'),
    io: z
      .strictObject({
        /** johnny-five IO plugin module, e.g. raspi-io; `none` disables load control. */
        plugin: z.string().min(1).default('none'),
        statusLedPin: z.number().int().min(0).max(63).optional(),
      })
      .default({ plugin: 'none' }),
    /** `/metrics`, `/healthz` and `/readyz` over HTTP (agent-metrics.ts); not served without. */
    metrics: z
      .strictObject({
        /** host:port, e.g. 127.0.0.1:9465 (quote an IPv6 one: '[::1]:9465'); port 0 picks a free one. */
        listen: z
          .string()
          .regex(/^(\[[0-9A-Fa-f:.]+\]|[^:[\]\s]+):\d{1,5}$/, 'listen is host:port, e.g. 127.0.0.1:9465')
          .refine((l) => Number(l.slice(l.lastIndexOf(':') + 1)) <= 65_535, 'the port is at most 65535')
          .default('127.0.0.1:9465'),
      })
      .optional(),
  })
  .superRefine((config, ctx) => {
    if (config.local) {
      const local = new URL(config.local.url);
      for (const endpoint of config.tre.endpoints)
        if (new URL(endpoint).host === local.host)
          ctx.addIssue({
            code: 'custom',
            path: ['local', 'url'],
            message: `is the TRE's endpoint ${endpoint}: the household's own broker must be another`,
          });
      return;
    }
    for (const [name, sensor] of Object.entries(config.sensors))
      if (sensor.source === 'mqtt')
        ctx.addIssue({
          code: 'custom',
          path: ['sensors', name, 'source'],
          message: 'mqtt needs the household broker: add local: { url: mqtt://<its host>:1883 }',
        });
  });
export type AgentConfig = z.infer<typeof agentConfigSchema>;
export type LocalBrokerConfig = z.infer<typeof localBrokerSchema>;

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
    ...(config.local ? { local: resolveLocalPaths(config.local, abs) } : {}),
    stateDir: abs(config.stateDir),
  };
}

function resolveLocalPaths(local: LocalBrokerConfig, abs: (p: string) => string): LocalBrokerConfig {
  const { passwordFile, ca, cert, key } = local;
  return {
    ...local,
    ...(passwordFile ? { passwordFile: abs(passwordFile) } : {}),
    ...(ca ? { ca: abs(ca) } : {}),
    ...(cert ? { cert: abs(cert) } : {}),
    ...(key ? { key: abs(key) } : {}),
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
