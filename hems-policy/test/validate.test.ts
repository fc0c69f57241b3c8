/** Validation: the shipped examples pass; every kind of invalid file gets its exact, located message. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../src/policy-errors.js';
import { parsePolicy, validateContext, validateEvent, validatePolicy } from '../src/validate.js';
import { EXAMPLES, INVALID_FIXTURES } from './fixtures.js';

const read = (path: string) => readFileSync(new URL(path, import.meta.url), 'utf8');
const messages = (text: string, file = 'policy.yaml') => {
  const check = validatePolicy(text, file);
  return check.ok ? [] : check.problems.map((p) => p.message);
};
const fixture = (name: string) => messages(read(`./fixtures/invalid/${name}.yaml`), `${name}.yaml`);

describe('shipped examples', () => {
  it.each(EXAMPLES)('%s.yaml is valid', (name) => {
    expect(messages(read(`../examples/${name}.yaml`), `${name}.yaml`)).toEqual([]);
  });
});

describe('invalid files: exact messages with file:line:column', () => {
  it.each(Object.entries(INVALID_FIXTURES))('%s', (name, expected) => {
    expect(fixture(name)).toEqual(expected);
  });
});

describe('more invalid policies', () => {
  const base = read('./fixtures/invalid/negative-numbers.yaml').replace('perEvent: -5', 'perEvent: 7400');

  it('accepts the corrected base policy', () => {
    expect(messages(base)).toEqual([]);
  });

  it('suggests the key that was probably meant', () => {
    expect(messages(base.replace('typicalPowerW:', 'typicalPower:'))).toEqual([
      'loads[0].typicalPowerW is missing: it must be a positive integer (watts) at policy.yaml:7:5',
      'unknown key "typicalPower" in loads[0] (did you mean "typicalPowerW"?); valid keys are name, typicalPowerW, actuator, minOnTimeMinutes, maxOffMinutes, allowedWindows at policy.yaml:8:5',
    ]);
    expect(messages(`${base}colour: red\n`)).toEqual([
      'unknown key "colour"; valid keys are mode, minPricePerMWh, maxReductionWh, loads, comfort at policy.yaml:16:1',
    ]);
  });

  it('reports missing keys, empty files and files that are not a mapping', () => {
    expect(messages('mode: auto-bid\n')).toEqual([
      'minPricePerMWh is missing: it must be a non-negative integer at policy.yaml:1:1',
      'maxReductionWh is missing: it must be a mapping (key: value lines) at policy.yaml:1:1',
      'loads is missing: it must be a list of loads at policy.yaml:1:1',
    ]);
    expect(messages('# nothing here\n')).toEqual([
      'the file is empty: it must be a mapping (key: value lines) at policy.yaml:1:1',
    ]);
    expect(messages('- mode: never\n')).toEqual([
      'the file must be a mapping (key: value lines), got a list at policy.yaml:1:1',
    ]);
    expect(messages('loads: []\n')).toEqual([
      'mode is missing: it must be one of auto-bid, ask-first, never at policy.yaml:1:1',
    ]);
  });

  it('checks limits, names and actuators across the file', () => {
    expect(messages(base.replace('perEvent: 7400', 'perEvent: 20000'))).toEqual([
      'maxReductionWh.perEvent must not exceed maxReductionWh.perDay (11100), got 20000 at policy.yaml:4:13',
    ]);
    const twice = `${base}  - name: ev-charger\n    typicalPowerW: 100\n    actuator: relay:17\n    maxOffMinutes: 5\n    allowedWindows: [{ from: "00:00", to: "24:00" }]\n`;
    expect(messages(twice)).toEqual([
      'loads[1].name must be unique, got "ev-charger" at policy.yaml:16:11',
      'loads[1].actuator must be unique (loads[0] uses it), got "relay:17" at policy.yaml:18:15',
    ]);
    expect(
      messages(base.replace('mode: auto-bid', 'mode: auto-bid\nloads: []').replace(/^loads:\n(.|\n)*/m, '')),
    ).toEqual([
      'loads must list at least one load (or set mode: never), got an empty list at policy.yaml:2:8',
    ]);
  });

  it('locates YAML syntax errors (only the first: later ones follow from it)', () => {
    const broken = base.replace('actuator: relay:17', 'actuator: [relay:17');
    expect(messages(broken, 'broken.yaml')).toEqual([
      'YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ] at broken.yaml:10:5',
    ]);
  });

  it('reports duplicate keys and weekday typos', () => {
    expect(messages('mode: never\nmode: auto-bid\n')).toEqual([
      'YAML syntax error: Map keys must be unique at policy.yaml:2:1',
    ]);
    expect(messages(base.replace('[mon, tue, wed, thu, fri]', '[mon, tues]'))).toEqual([
      'loads[0].allowedWindows[0].days[1] must be one of mon, tue, wed, thu, fri, sat, sun, got "tues" at policy.yaml:13:21',
    ]);
  });

  it('validates the settings of a household that switched to never', () => {
    expect(messages('mode: never\nminPricePerMWh: 1.5\n')).toEqual([
      'minPricePerMWh must be a non-negative integer, got 1.5 at policy.yaml:2:17',
    ]);
  });

  it('parsePolicy throws an error with a stable code and every problem', () => {
    const err = (() => {
      try {
        parsePolicy(read('./fixtures/invalid/negative-price-and-time.yaml'), 'p.yaml');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidInputError);
    expect(err).toMatchObject({
      code: 'HEMS_POLICY_INVALID',
      problems: [
        { line: 2, column: 17 },
        { line: 11, column: 20 },
      ],
    });
  });
});

describe('event and context files (JSON)', () => {
  it('locates problems in an event file', () => {
    const check = validateEvent(
      '{\n  "eventId": "e-1",\n  "windowStart": "2026-01-14T17:00:00Z",\n  "windowEnd": "2026-01-14T16:00:00Z",\n  "bidDeadline": "tomorrow",\n  "requestedReductionWh": 0,\n  "priceCapPerMWh": 3.5\n}\n',
      'event.json',
    );
    expect(check.ok ? [] : check.problems.map((p) => p.message)).toEqual([
      'bidDeadline must be an instant in UTC, ISO 8601 with Z, e.g. 2026-01-14T17:00:00Z, got "tomorrow" at event.json:5:18',
      'requestedReductionWh must be a positive integer, got 0 at event.json:6:27',
      'priceCapPerMWh must be a non-negative integer, got 3.5 at event.json:7:21',
    ]);
  });

  it('accepts the wire event with its extra keys, and checks the window order', () => {
    const event = {
      v: 1,
      dsmId: 'dsm-1',
      eventId: 'e-1',
      windowStart: '2026-01-14T17:00:00Z',
      windowEnd: '2026-01-14T17:00:00Z',
      bidDeadline: '2026-01-14T16:00:00Z',
      requestedReductionWh: 1000,
      priceCapPerMWh: 30000,
    };
    const check = validateEvent(JSON.stringify(event), 'e.json');
    expect(check.ok ? [] : check.problems.map((p) => p.message)).toEqual([
      'windowEnd must be after windowStart, got "2026-01-14T17:00:00Z" at e.json:1:89',
    ]);
  });

  it('locates problems in a context file', () => {
    const check = validateContext(
      JSON.stringify(
        {
          timeZone: 'Europe/Londn',
          now: '2026-01-14T15:00:00Z',
          loads: { 'heat-pump': { state: 'running' } },
        },
        null,
        2,
      ),
    );
    expect(check.ok ? [] : check.problems.map((p) => p.message)).toEqual([
      'timeZone must be an IANA time zone such as Europe/London, got "Europe/Londn" at context.json:2:15',
      'loads.heat-pump.state must be one of on, off, unavailable, got "running" at context.json:6:16',
    ]);
  });
});
