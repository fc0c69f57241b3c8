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
