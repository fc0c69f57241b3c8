/** A plain-language summary of what a policy allows, for the household to read back. */
import { type ComfortRule, type Load, type Policy, type TimeWindow, WEEKDAYS } from './policy-schema.js';

const DAY_NAMES: Record<string, string> = {
  mon: 'Mon',
  tue: 'Tue',
  wed: 'Wed',
  thu: 'Thu',
  fri: 'Fri',
  sat: 'Sat',
  sun: 'Sun',
};

/** "24500 per MWh" as "24.5 per kWh", exactly (integer arithmetic, no floats). */
export function perKWh(pricePerMWh: number): string {
  const whole = Math.floor(pricePerMWh / 1000);
  const fraction = String(pricePerMWh % 1000)
    .padStart(3, '0')
    .replace(/0+$/, '');
  return fraction ? `${whole}.${fraction}` : String(whole);
}

/** Wh as "7400 Wh (7.4 kWh)". */
export function energy(wh: number): string {
  return wh >= 1000 ? `${wh} Wh (${perKWh(wh)} kWh)` : `${wh} Wh`;
}

/** "Mon-Fri", "Sat, Sun", "every day". */
export function dayList(days: readonly string[] | undefined): string {
  if (days === undefined || days.length === 7) return 'every day';
  const idx = [...days].map((d) => WEEKDAYS.indexOf(d as (typeof WEEKDAYS)[number])).sort((a, b) => a - b);
  const runs: string[] = [];
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && idx[j + 1] === idx[j]! + 1) j++;
    const a = DAY_NAMES[WEEKDAYS[idx[i]!]!]!;
    const b = DAY_NAMES[WEEKDAYS[idx[j]!]!]!;
    runs.push(j - i >= 2 ? `${a}-${b}` : j > i ? `${a}, ${b}` : a);
    i = j + 1;
  }
  return runs.join(', ');
}

function window(w: Pick<TimeWindow, 'days' | 'from' | 'to'>): string {
  return `${dayList(w.days)} ${w.from}-${w.to}`;
}

function loadLine(load: Load): string {
  const rest =
    load.minOnTimeMinutes > 0
      ? `, then back on for at least ${load.minOnTimeMinutes} min before it is switched off again`
      : '';
  return (
    `  - ${load.name} (${load.typicalPowerW} W, switched by ${load.actuator}): only ${load.allowedWindows.map(window).join('; ')} (local time); ` +
    `off for at most ${load.maxOffMinutes} min at a time${rest}.`
  );
}

function loadsOf(rule: ComfortRule): string {
  return rule.loads === undefined ? 'any load' : rule.loads.join(', ');
}

function comfortLine(rule: ComfortRule): string {
  switch (rule.rule) {
    case 'min-indoor-temperature': {
      const missing =
        rule.withoutReading === 'never-shed'
          ? 'without a reading, never shed them'
          : 'without a reading, this rule does not apply';
      return `  - Never shed ${loadsOf(rule)} while sensor ${rule.sensor} reads below ${rule.minCelsius} °C (a reading counts for ${rule.maxReadingAgeMinutes} min; ${missing}).`;
    }
    case 'blocked-hours':
      return `  - Never shed ${loadsOf(rule)} ${window(rule)} (local time).`;
  }
}

/** Lines of plain text describing what the policy allows. */
export function explainPolicy(policy: Policy): string[] {
  if (policy.mode === 'never') {
    return [
      'Mode: never. This household never bids in demand-response events; nothing is ever switched off.',
    ];
  }
  const lines = [
    policy.mode === 'auto-bid'
      ? 'Mode: auto-bid. The home energy manager bids on its own whenever an event fits this policy.'
      : 'Mode: ask-first. The home energy manager prepares a bid and sends it only after the household approves it.',
    `Price: bids only when the event pays at least ${perKWh(policy.minPricePerMWh)} per kWh ` +
      `(${policy.minPricePerMWh} minor currency units per MWh), and always bids exactly that minimum.`,
    `Limits: at most ${energy(policy.maxReductionWh.perEvent)} per event and ${energy(policy.maxReductionWh.perDay)} per day; ` +
      'never more than the event asks for.',
    'Loads it may switch off, in this order:',
    ...policy.loads.map(loadLine),
  ];
  if (policy.comfort.length > 0) lines.push('Comfort rules:', ...policy.comfort.map(comfortLine));
  return lines;
}
