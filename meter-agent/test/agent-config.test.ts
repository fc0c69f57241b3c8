import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadAgentConfig } from '../src/agent-config.js';

async function load(text: string) {
  const dir = await mkdtemp(join(tmpdir(), 'agent-config-'));
  await writeFile(join(dir, 'agent.yaml'), text);
  try {
    return loadAgentConfig(join(dir, 'agent.yaml'));
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.replace(dir, '<dir>'));
    throw err;
  }
}

const good = `meterId: m1
tre:
  endpoints: [mqtts://tre.local:8883]
  ca: ca.crt
  cert: d.crt
  key: d.key
  attestationPolicy: p.jws
meter:
  port: /dev/ttyUSB0
`;

describe('agent config', () => {
  it('accepts the shipped example', async () => {
    const { readFile } = await import('node:fs/promises');
    const example = await readFile(new URL('../packaging/agent.example.yaml', import.meta.url), 'utf8');
    const config = await load(example);
    expect(config).toMatchObject({ meterId: 'm-0001', meter: { protocol: 'dsmr', intervalMinutes: 15 } });
  });
  it('fills defaults and resolves paths against the file', async () => {
    const config = await load(good);
    expect(config).toMatchObject({ tre: { attestEveryMinutes: 15 }, io: { plugin: 'none' } });
    expect((config as { tre: { ca: string } }).tre.ca).toMatch(/agent-config-.*\/ca\.crt$/);
  });
  it('names file:line:col for wrong values and unknown keys', async () => {
    expect(
      await load(good.replace('port: /dev/ttyUSB0', 'port: /dev/ttyUSB0\n  intervalMinutes: 20')),
    ).toEqual(['<dir>/agent.yaml:10:20: meter.intervalMinutes: must be 15 or 30']);
    expect(await load(`${good}colour: blue\n`)).toEqual([
      '<dir>/agent.yaml:10:1: colour: unknown key "colour"',
    ]);
    expect(await load(good.replace('mqtts://tre.local:8883', 'http://x'))).toEqual([
      '<dir>/agent.yaml:3:15: tre.endpoints.0: an endpoint looks like mqtts://host:port',
    ]);
    expect((await load('meterId: [unclosed\n')) as string[]).toEqual([
      expect.stringMatching(/^<dir>\/agent\.yaml:\d+:\d+: /),
    ]);
  });
});

describe('agent config: comfort sensors', () => {
  it('reads each source with its defaults, resolves its paths, and names what is wrong', async () => {
    const sensors = `${good}sensors:
  living-room:
    source: mqtt
    topic: home/living-room/temperature
    field: temperature
  hall:
    source: w1
    path: w1/temperature
  attic:
    source: command
    command: [bin/attic, --celsius]
  cellar:
    source: command
    command: [cellar-temperature]
local:
  url: mqtt://homeassistant.local:1883
  passwordFile: home.password
`;
    const config = (await load(sensors)) as Exclude<Awaited<ReturnType<typeof load>>, string[]>;
    expect(config.sensors).toEqual({
      'living-room': {
        source: 'mqtt',
        topic: 'home/living-room/temperature',
        field: 'temperature',
        maxAgeMinutes: 15,
      },
      hall: {
        source: 'w1',
        path: expect.stringMatching(/agent-config-.*\/w1\/temperature$/),
        pollSeconds: 60,
        maxAgeMinutes: 15,
      },
      attic: {
        source: 'command',
        command: [expect.stringMatching(/agent-config-.*\/bin\/attic$/), '--celsius'],
        timeoutSeconds: 10,
        pollSeconds: 60,
        maxAgeMinutes: 15,
      },
      cellar: expect.objectContaining({ command: ['cellar-temperature'] }), // a bare name: from PATH
    });
    expect(config.local).toEqual({
      url: 'mqtt://homeassistant.local:1883',
      passwordFile: expect.stringMatching(/agent-config-.*\/home\.password$/),
      publish: true,
      discoveryPrefix: 'homeassistant',
      publishEverySeconds: 10,
    });
    const plain = (await load(good)) as Exclude<Awaited<ReturnType<typeof load>>, string[]>;
    expect(plain.sensors).toEqual({});
    expect(plain.local).toBeUndefined(); // nothing is published anywhere without it
    const wrong = (sensor: string) => load(`${good}sensors:\n  s:\n${sensor}`);
    expect(await wrong('    source: mqtt\n    topic: home/+/temperature\n')).toContain(
      '<dir>/agent.yaml:13:12: sensors.s.topic: a topic without wildcards (+ or #)',
    );
    expect(await wrong('    source: w1\n    path: /x\n    pollSeconds: 600\n    maxAgeMinutes: 5\n')).toEqual(
      [
        '<dir>/agent.yaml:14:18: sensors.s.pollSeconds: must be shorter than maxAgeMinutes (300 s), or every reading goes stale before the next',
      ],
    );
    expect(await wrong('    source: serial\n')).toEqual([
      '<dir>/agent.yaml:12:13: sensors.s.source: source must be mqtt, w1 or command',
    ]);
    expect(await wrong('    source: command\n    command: []\n')).toEqual([
      expect.stringMatching(/^<dir>\/agent\.yaml:13:\d+: sensors\.s\.command: /),
    ]);
    expect(await load(`${good}local:\n  url: mqtt://user:secret@broker:1883\n`)).toEqual([
      expect.stringMatching(/^<dir>\/agent\.yaml:11:8: local\.url: a URL such as mqtt:\/\/127\.0\.0\.1:1883/),
    ]);
    // An MQTT sensor needs the household broker; the household broker is never the TRE.
    expect(await wrong('    source: mqtt\n    topic: home/t\n')).toEqual([
      '<dir>/agent.yaml:12:13: sensors.s.source: mqtt needs the household broker: add local: { url: mqtt://<its host>:1883 }',
    ]);
    expect(await load(`${good}local:\n  url: mqtt://tre.local:8883\n`)).toEqual([
      expect.stringMatching(/local\.url: is the TRE's endpoint mqtts:\/\/tre\.local:8883/),
    ]);
    expect(await load(`${good}local:\n  url: mqtt://h:1883\n  cert: c.pem\n`)).toEqual([
      expect.stringMatching(/local\.key: cert and key go together/),
    ]);
  });
});

describe('first-boot user-data (cloud-init)', () => {
  it('is cloud-config YAML whose agent.yaml passes the agent’s own validation', async () => {
    const { readFile } = await import('node:fs/promises');
    const { parse } = await import('yaml');
    const text = await readFile(new URL('../packaging/user-data.yaml', import.meta.url), 'utf8');
    expect(text.startsWith('#cloud-config')).toBe(true);
    const doc = parse(text) as { write_files: { path: string; content: string }[]; runcmd: string[][] };
    const agentYaml = doc.write_files
      .find((f) => f.path === '/etc/meter-agent/agent.yaml')!
      .content.replaceAll('METER_ID', 'm-0001');
    expect(await load(agentYaml)).toMatchObject({ meterId: 'm-0001', meter: { protocol: 'dsmr' } });
    expect(doc.runcmd.flat().join(' ')).toMatch(/meter-agent provision request/);
  });
});
