/** The CLI, run in-process through `main(args, io)`: exit codes and output. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../src/cli-main.js';
import { policyJsonSchemaText } from '../src/json-schema.js';

const pkgDir = new URL('../', import.meta.url);

async function run(args: string[], files: Record<string, string> = {}) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, {
    stdout: (s) => {
      stdout += s;
    },
    stderr: (s) => {
      stderr += s;
    },
    readFile: (path) => files[path] ?? readFileSync(new URL(path, pkgDir), 'utf8'),
    now: () => new Date('2026-01-14T15:00:00Z'),
    timeZone: 'Europe/London',
  });
  return { code, stdout, stderr };
}

describe('hems-policy validate', () => {
  it('exits 0 for each shipped example', async () => {
    for (const [name, loads] of [
      ['flat-ev', 1],
      ['house-heat-pump', 2],
      ['never', 0],
    ] as const) {
      const file = `examples/${name}.yaml`;
      const mode = name === 'never' ? 'never' : name === 'flat-ev' ? 'auto-bid' : 'ask-first';
      expect(await run(['validate', file])).toEqual({
        code: 0,
        stdout: `${file}: valid (mode ${mode}, ${loads} load(s))\n`,
        stderr: '',
      });
    }
  });

  it('exits 1 with located messages for an invalid file', async () => {
    expect(await run(['validate', 'test/fixtures/invalid/negative-price-and-time.yaml'])).toEqual({
      code: 1,
      stdout: '',
      stderr:
        'minPricePerMWh must be a non-negative integer, got -150 at test/fixtures/invalid/negative-price-and-time.yaml:2:17\n' +
        'loads[0].maxOffMinutes must be a whole number of minutes from 1 to 1440, got -30 at test/fixtures/invalid/negative-price-and-time.yaml:11:20\n',
    });
    expect(
      await run(['validate', 'policy.yaml'], {
        'policy.yaml': 'mode: auto-bid\nmaxReductionWh:\n  perEvent: -5\n',
      }),
    ).toMatchObject({
      code: 1,
      stderr: expect.stringContaining(
        'maxReductionWh.perEvent must be a positive integer, got -5 at policy.yaml:3:13\n',
      ),
    });
  });

  it('exits 1 when the file cannot be read', async () => {
    const r = await run(['validate', 'no-such-file.yaml']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cannot read no-such-file\.yaml: ENOENT/);
  });

  it('exits 2 on wrong usage, with a hint', async () => {
    const r = await run(['validate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: missing required argument 'file'");
    expect(r.stderr).toContain('hems-policy --help');
    expect((await run(['frobnicate'])).code).toBe(2);
  });
});

describe('hems-policy decide', () => {
  it('prints the bid', async () => {
    const r = await run([
      'decide',
      'examples/house-heat-pump.yaml',
      '--event',
      'examples/event.json',
      '--context',
      'examples/context.json',
    ]);
    expect(r).toEqual({
      code: 0,
      stderr: '',
      stdout: [
        'bid for event evt-2026-01-14-evening: 3000 Wh (3 kWh) at 20000 per MWh (20 per kWh)',
        '  switch off heat-pump (relay:5) from 2026-01-14T17:00:00Z to 2026-01-14T18:00:00Z',
        '  switch off washing-machine (plug:laundry) from 2026-01-14T17:00:00Z to 2026-01-14T17:50:00Z',
        "limited by the policy's maximum per event (the loads could shed 4400 Wh (4.4 kWh))",
        'ask-first: send this bid only after the household approves it',
        '',
      ].join('\n'),
    });
  });

  it('prints the decision as JSON with --json, taking now and the time zone from the io without --context', async () => {
    const r = await run(['decide', 'examples/flat-ev.yaml', '--event', 'examples/event.json', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      kind: 'bid',
      eventId: 'evt-2026-01-14-evening',
      bid: {
        quantityWh: 7400,
        pricePerMWh: 15000,
        loads: [
          {
            name: 'ev-charger',
            actuator: 'relay:17',
            from: '2026-01-14T17:00:00Z',
            to: '2026-01-14T18:00:00Z',
          },
        ],
      },
      requiresApproval: false,
      limitedBy: 'per-event',
      sheddableWh: 12950,
      skippedLoads: [],
    });
  });

  it('prints the reason for not bidding', async () => {
    expect(await run(['decide', 'examples/never.yaml', '--event', 'examples/event.json'])).toEqual({
      code: 0,
      stderr: '',
      stdout:
        'no bid for event evt-2026-01-14-evening (mode-never): this household never bids (mode: never)\n',
    });
    const late = await run([
      'decide',
      'examples/flat-ev.yaml',
      '--event',
      'examples/event.json',
      '--now',
      '2026-01-14T16:30:00Z',
      '--json',
    ]);
    expect(JSON.parse(late.stdout)).toMatchObject({ kind: 'no-bid', code: 'bid-deadline-passed' });
  });

  it('--time-zone changes the local time the windows are read in', async () => {
    const args = ['decide', 'examples/flat-ev.yaml', '--event', 'e.json', '--json'];
    const files = {
      'e.json': JSON.stringify({
        eventId: 'summer',
        windowStart: '2026-07-15T14:00:00Z',
        windowEnd: '2026-07-15T16:00:00Z',
        bidDeadline: '2026-07-15T13:00:00Z',
        requestedReductionWh: 1000,
        priceCapPerMWh: 20000,
      }),
    };
    const london = JSON.parse((await run(args, files)).stdout);
    const utc = JSON.parse((await run([...args, '--time-zone', 'UTC'], files)).stdout);
    // London (BST): 15:00-17:00 local, allowed from 16:00; UTC: 14:00-16:00 local, never allowed.
    expect(london.bid.loads[0]).toMatchObject({ from: '2026-07-15T15:00:00Z' });
    expect(utc).toMatchObject({ kind: 'no-bid', code: 'no-sheddable-load' });
  });

  it('exits 1 for an invalid event or context file, 2 for a bad --now', async () => {
    const bad = await run(['decide', 'examples/flat-ev.yaml', '--event', 'e.json'], {
      'e.json': '{"eventId": "x", "windowStart": "soon"}',
    });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(
      'windowStart must be an instant in UTC, ISO 8601 with Z, e.g. 2026-01-14T17:00:00Z, got "soon" at e.json:1:33',
    );
    expect(bad.stderr).toContain('windowEnd is missing');
    const ctx = await run(
      ['decide', 'examples/flat-ev.yaml', '--event', 'examples/event.json', '--context', 'c.json'],
      {
        'c.json': '{"timeZone": "Mars/Olympus", "now": "2026-01-14T15:00:00Z"}',
      },
    );
    expect(ctx).toMatchObject({
      code: 1,
      stderr: 'timeZone must be an IANA time zone such as Europe/London, got "Mars/Olympus" at c.json:1:14\n',
    });
    const now = await run([
      'decide',
      'examples/flat-ev.yaml',
      '--event',
      'examples/event.json',
      '--now',
      'noon',
    ]);
    expect(now.code).toBe(2);
    expect(now.stderr).toContain('--now must be an instant in UTC');
    expect((await run(['decide', 'examples/flat-ev.yaml'])).code).toBe(2);
  });
});

describe('hems-policy explain, schema, help', () => {
  it('explains a policy in plain words', async () => {
    const r = await run(['explain', 'examples/house-heat-pump.yaml']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'Mode: ask-first. The home energy manager prepares a bid and sends it only after the household approves it.',
        'Price: bids only when the event pays at least 20 per kWh (20000 minor currency units per MWh), and always bids exactly that minimum.',
        'Limits: at most 3000 Wh (3 kWh) per event and 5000 Wh (5 kWh) per day; never more than the event asks for.',
        'Loads it may switch off, in this order:',
        '  - heat-pump (2000 W, switched by relay:5): only every day 06:00-23:00 (local time); off for at most 60 min at a time, then back on for at least 30 min before it is switched off again.',
        '  - washing-machine (1200 W, switched by plug:laundry): only Mon-Fri 07:00-22:00; Sat, Sun 09:00-20:00 (local time); off for at most 180 min at a time.',
        'Comfort rules:',
        '  - Never shed heat-pump while sensor living-room reads below 19.5 °C (a reading counts for 60 min; without a reading, this rule does not apply).',
        '  - Never shed heat-pump every day 18:00-20:00 (local time).',
        '',
      ].join('\n'),
    );
    expect((await run(['explain', 'examples/never.yaml'])).stdout).toContain('never bids');
    expect((await run(['explain', 'test/fixtures/invalid/wrong-type.yaml'])).code).toBe(1);
  });

  it('prints the JSON Schema', async () => {
    const r = await run(['schema']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(policyJsonSchemaText());
    expect(JSON.parse(r.stdout).title).toBe('Household demand-response bidding policy (hems-policy)');
  });

  it('has help with examples for the program and each command', async () => {
    const top = await run(['--help']);
    expect(top.code).toBe(0);
    for (const text of [
      'validate <file>',
      'decide [options] <file>',
      'explain <file>',
      'schema',
      'Examples:',
      'Exit codes:',
    ])
      expect(top.stdout).toContain(text);
    for (const cmd of ['validate', 'decide', 'explain', 'schema']) {
      const help = await run([cmd, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: hems-policy ${cmd}`);
      expect(help.stdout).toMatch(/Examples?:/);
    }
  });

  it('cli.ts is a short entry with a shebang that calls main', () => {
    const entry = readFileSync(new URL('src/cli.ts', pkgDir), 'utf8');
    expect(entry.startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(entry).toContain('await main(process.argv.slice(2))');
  });
});
