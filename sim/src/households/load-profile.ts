/**
 * Plausible, seeded household load (figures from ../shared/reference/meter-and-grid-facts.md):
 * a night base load of 100-300 W, a morning peak and a higher evening peak (17:00-20:00) at two to
 * three times the mean, flatter weekends, more in winter, and appliances as discrete events:
 * washing machine (0.5-2 kW for 1-2 h), EV charger (3.7/7.4/11 kW for hours), heat pump (1-3 kW,
 * cycling, more in winter). Deterministic: the same seed and time give the same power.
 * Simulation randomness only (mulberry32); nothing here is security-relevant.
 */

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface HouseholdProfile {
  seed: number;
  baseW: number;
  /** Scales the daily shape (household size). */
  scale: number;
  ev?: { kw: number; daysPerWeek: number };
  heatPump?: { kw: number };
  washingMachine: { kw: number; perWeek: number };
  /** Main fuse capacity in W (single phase 25 A / 35 A, or three phase). */
  capacityW: number;
  /** Index into the shipped hems-policy examples: 0 flat with EV, 1 house with heat pump, 2 never bids. */
  policy: 'flat-ev' | 'house-heat-pump' | 'never';
}

export function householdProfile(seed: number): HouseholdProfile {
  const rnd = mulberry32(seed * 7919 + 1);
  const ev =
    rnd() < 0.3
      ? { kw: [3.7, 7.4, 11][Math.floor(rnd() * 3)]!, daysPerWeek: 2 + Math.floor(rnd() * 4) }
      : undefined;
  const heatPump = rnd() < 0.35 ? { kw: 1 + rnd() * 2 } : undefined;
  const capacityW = ev?.kw === 11 || rnd() < 0.2 ? 17_250 : rnd() < 0.5 ? 5_750 : 8_050;
  return {
    seed,
    baseW: 80 + rnd() * 120,
    scale: 0.6 + rnd() * 0.9,
    ev,
    heatPump,
    washingMachine: { kw: 0.5 + rnd() * 1.5, perWeek: 1 + Math.floor(rnd() * 5) },
    capacityW: Math.max(capacityW, ev ? Math.ceil(ev.kw * 1000 + 2_000) : 0),
    policy: ev ? 'flat-ev' : heatPump ? 'house-heat-pump' : rnd() < 0.5 ? 'never' : 'house-heat-pump',
  };
}

const DAY_MS = 86_400_000;

/** Daily shape multiplier by fractional hour (local time approximated as UTC). */
function dailyShape(hour: number, weekend: boolean): number {
  const gauss = (mu: number, sigma: number) => Math.exp(-((hour - mu) ** 2) / (2 * sigma ** 2));
  const morning = weekend ? 0.7 * gauss(9.5, 1.8) : 0.9 * gauss(7.5, 1.0);
  const evening = (weekend ? 1.6 : 2.0) * gauss(18.5, 1.6);
  const day = weekend ? 0.6 * gauss(13, 3) : 0.25 * gauss(13, 3);
  return 0.35 + morning + evening + day;
}

function seasonFactor(tMs: number): number {
  const dayOfYear = Math.floor((tMs % (365.25 * DAY_MS)) / DAY_MS);
  return 1 + 0.25 * Math.cos(((dayOfYear - 15) / 365.25) * 2 * Math.PI); // peak mid-January
}

/** Appliance events for one day, derived from (seed, day) so any minute can be evaluated alone. */
function dayEvents(p: HouseholdProfile, day: number): { from: number; to: number; w: number }[] {
  const rnd = mulberry32(p.seed * 1_000_003 + day * 97 + 13);
  const events: { from: number; to: number; w: number }[] = [];
  const dayStart = day * DAY_MS;
  if (rnd() < p.washingMachine.perWeek / 7) {
    const from = dayStart + (8 + rnd() * 12) * 3_600_000;
    events.push({ from, to: from + (1 + rnd()) * 3_600_000, w: p.washingMachine.kw * 1000 });
  }
  if (p.ev && rnd() < p.ev.daysPerWeek / 7) {
    const from = dayStart + (17 + rnd() * 4) * 3_600_000;
    events.push({ from, to: from + (1.5 + rnd() * 3) * 3_600_000, w: p.ev.kw * 1000 });
  }
  return events;
}

/** Instantaneous power in W at time t (ms since epoch). */
export function powerW(p: HouseholdProfile, tMs: number): number {
  const day = Math.floor(tMs / DAY_MS);
  const hour = (tMs - day * DAY_MS) / 3_600_000;
  const weekday = (day + 4) % 7; // 1970-01-01 was a Thursday
  const weekend = weekday === 0 || weekday === 6;
  const season = seasonFactor(tMs);
  let w = p.baseW + 150 * p.scale * dailyShape(hour, weekend) * season;
  if (p.heatPump) {
    const duty = Math.max(0, 0.4 * (season - 0.8)); // ~18 % of the time in midwinter, none in summer
    const cycleMinute = Math.floor(tMs / 60_000) % 60;
    if (cycleMinute < duty * 60) w += p.heatPump.kw * 1000;
  }
  for (const e of dayEvents(p, day)) if (tMs >= e.from && tMs < e.to) w += e.w;
  return Math.min(w, p.capacityW);
}

/**
 * A household's meter: advances minute by minute and keeps the import register in integer Wh
 * (energy is integrated exactly in W-minutes, the register reports whole Wh).
 */
export class SimulatedMeter {
  private wattMinutes = 0;
  /** Demand-response curtailments the household carries out: [from, to) minus watts. */
  private readonly curtailments: { from: number; to: number; watts: number }[] = [];
  private t: number;

  constructor(
    readonly profile: HouseholdProfile,
    startMs: number,
    /** Register at start, Wh. */
    initialWh = 10_000 + profile.seed * 37,
  ) {
    this.t = Math.floor(startMs / 60_000) * 60_000;
    this.wattMinutes = initialWh * 60;
  }

  get now(): number {
    return this.t;
  }

  /** Import register in Wh. */
  get registerWh(): number {
    return Math.floor(this.wattMinutes / 60);
  }

  /** The household sheds `watts` in [from, to) (it never goes below its base load). */
  curtail(from: number, to: number, watts: number): void {
    this.curtailments.push({ from, to, watts });
  }

  /** Advances to `untilMs` (minute resolution). */
  advanceTo(untilMs: number): void {
    while (this.t + 60_000 <= untilMs) {
      const shed = this.curtailments
        .filter((c) => this.t >= c.from && this.t < c.to)
        .reduce((a, c) => a + c.watts, 0);
      this.wattMinutes += Math.round(Math.max(this.profile.baseW, powerW(this.profile, this.t) - shed));
      this.t += 60_000;
    }
  }
}
