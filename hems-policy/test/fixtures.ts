/** The shipped examples and the invalid fixtures with exactly what validation says about each. */

export const EXAMPLES = ['flat-ev', 'house-heat-pump', 'never'];

/** Each invalid fixture and exactly what validation says about it. */
export const INVALID_FIXTURES: Record<string, string[]> = {
  'wrong-type': [
    'loads[0].typicalPowerW must be a positive integer (watts), got "7.4 kW" at wrong-type.yaml:8:20',
  ],
  'unknown-key': [
    'unknown key "priority" in loads[0]; valid keys are name, typicalPowerW, actuator, minOnTimeMinutes, maxOffMinutes, allowedWindows at unknown-key.yaml:11:5',
  ],
  'unknown-key-typo': [
    'unknown key "perMonth" in maxReductionWh; valid keys are perEvent, perDay at unknown-key-typo.yaml:6:3',
  ],
  'unknown-mode': [
    'mode must be one of auto-bid, ask-first, never, got "sometimes" at unknown-mode.yaml:1:7',
  ],
  'bad-time-window': [
    'loads[0].allowedWindows[0].to must be a time "HH:MM" between "00:00" and "24:00" (quote it in YAML), got "25:00" at bad-time-window.yaml:15:13',
  ],
  'reversed-time-window': [
    'loads[0].allowedWindows[0].to must be after from (22:00), got "06:00"; a window cannot cross midnight, so split it in two, e.g. 22:00-24:00 and 00:00-06:00 at reversed-time-window.yaml:15:13',
  ],
  'overlapping-windows': [
    'loads[0].allowedWindows[1] overlaps allowedWindows[0] on fri (16:00-23:00 and 20:00-24:00); merge them into one window at overlapping-windows.yaml:16:9',
  ],
  'negative-numbers': [
    'maxReductionWh.perEvent must be a positive integer, got -5 at negative-numbers.yaml:4:13',
  ],
  'negative-price-and-time': [
    'minPricePerMWh must be a non-negative integer, got -150 at negative-price-and-time.yaml:2:17',
    'loads[0].maxOffMinutes must be a whole number of minutes from 1 to 1440, got -30 at negative-price-and-time.yaml:11:20',
  ],
  'rule-names-unknown-load': [
    'comfort[0].loads[0] must name a load of this policy (ev-charger), got "heat-pump" at rule-names-unknown-load.yaml:18:13',
  ],
};
