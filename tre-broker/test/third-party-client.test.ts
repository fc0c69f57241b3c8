/** A third-party MQTT client (Debian mosquitto-clients) works with the files `tre pki issue` writes. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextMessage, startTreFixture, type TreFixture } from './support/tre-fixture.js';

const run = promisify(execFile);
let fx: TreFixture;
beforeAll(async () => {
  fx = await startTreFixture();
});
afterAll(async () => fx?.close());

async function mosquittoPub(role: 'meter', id: string, topic: string, message: string) {
  const files = await fx.issue(role, id);
  const args = [
    '-h',
    '127.0.0.1',
    '-p',
    String(fx.tre.port),
    '-V',
    'mqttv311',
    '--cafile',
    files.ca,
    '--cert',
    files.cert,
    '--key',
    files.key,
  ];
  return run('mosquitto_pub', [...args, '-q', '1', '-t', topic, '-m', message]).then(
    () => 0,
    (err: { code?: number | string }) => {
      if (err.code === 'ENOENT')
        throw new Error('mosquitto_pub not found: install Debian mosquitto-clients (npm test does)');
      return Number(err.code);
    },
  );
}

describe('mosquitto_pub / mosquitto_sub', () => {
  it('publishes to the meter’s own topic and gets a receipt; refused on another meter’s topic', async () => {
    const observer = await fx.connect('meter', 'mq1');
    const receipt = nextMessage(observer, 'tre/v1/meter/mq1/inbox/receipt');
    await new Promise((r) => setTimeout(r, 100));
    expect(await mosquittoPub('meter', 'mq1', 'tre/v1/meter/mq1/reading', '{"v":1}')).toBe(0);
    expect(JSON.parse((await receipt).payload.toString())).toMatchObject({ v: 1, family: 'reading' });
    expect(await mosquittoPub('meter', 'mq1', 'tre/v1/meter/mq2/reading', '{"v":1}')).not.toBe(0);
  });

  it('mosquitto_sub is refused a wildcard over other meters and reads its own inbox', async () => {
    const files = await fx.issue('meter', 'mq3');
    const args = [
      '-h',
      '127.0.0.1',
      '-p',
      String(fx.tre.port),
      '-V',
      'mqttv311',
      '--cafile',
      files.ca,
      '--cert',
      files.cert,
      '--key',
      files.key,
    ];
    const denied = await run('mosquitto_sub', [
      ...args,
      '-t',
      'tre/v1/meter/+/reading',
      '-C',
      '1',
      '-W',
      '3',
    ]).then(
      (r) => r.stderr,
      (err: { stderr: string }) => err.stderr,
    );
    expect(denied).toMatch(/denied/i);
    const sub = run('mosquitto_sub', [...args, '-t', 'tre/v1/meter/mq3/inbox/+', '-C', '1', '-W', '5']);
    await new Promise((r) => setTimeout(r, 500));
    await fx.tre.broker.publish('tre/v1/meter/mq3/inbox/alert', '{"hello":1}');
    expect((await sub).stdout.trim()).toBe('{"hello":1}');
  });
});
