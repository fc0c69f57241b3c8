/**
 * Home Assistant MQTT discovery for what the household may see of itself: the meter's power,
 * registers, phases, gas and water, the last interval, the running bill, its DR events and the
 * TRE's trust. Pure: the states the agent publishes (`meter-agent/<node>/<state>`, JSON) and one
 * discovery config per entity, as Home Assistant's energy dashboard wants them (`energy` +
 * `total_increasing` in kWh for registers, `power` + `measurement` in W, `gas` / `water` in m³).
 * `HomePublisher` sends them.
 */

import type { IntervalRecord, MeterSnapshot } from '@tre/hardware';
import { type DiscoveryComponent, type HomeState, homeTopics } from '@tre/protocol';
import type { AgentStatus, Proposal } from './household-agent.js';
import type { LinkState } from './tre-link.js';

/** A state's numeric fields by key, e.g. `{ energy_import: 1234.567, voltage_l1: 229.8 }`. */
export type StateValues = Record<string, number>;

/** What one entity reads from which state. */
export interface EntitySpec {
  component: DiscoveryComponent;
  /** The object id (`<node>_<object>` is its unique id) and, for sensors, its field in the state. */
  object: string;
  state?: HomeState;
  name: string;
  deviceClass?: string;
  stateClass?: 'measurement' | 'total' | 'total_increasing';
  unit?: string;
  precision?: number;
  diagnostic?: boolean;
  /** For `total` entities that restart (an interval, a billing period): the field with the start. */
  lastResetField?: string;
  /** `device_class: enum` sensors. */
  options?: readonly string[];
  /** A state field whose value (an object) becomes the entity's attributes. */
  attributesField?: string;
}

/** Wh (an integer register) to kWh for Home Assistant, exact to the Wh. */
const kWh = (wh: number): number => wh / 1000;

type MeterEntityFields = Omit<EntitySpec, 'component' | 'object' | 'state'>;
const energy = { deviceClass: 'energy', stateClass: 'total_increasing', unit: 'kWh', precision: 3 } as const;
const power = { deviceClass: 'power', stateClass: 'measurement', unit: 'W', precision: 0 } as const;
const volume = { stateClass: 'total_increasing', unit: 'm³', precision: 3 } as const;
const counter = { stateClass: 'total_increasing', precision: 0, diagnostic: true } as const;
const phase = (p: string | undefined) => (p ?? '').toUpperCase();
const channel = (c: string | undefined) => (c ? ` ${c}` : '');

/** The meter state's keys (`energy_import`, `voltage_l1`, `gas_2`, ...) and their entities. */
const METER_KEYS: readonly [RegExp, (m: RegExpExecArray) => MeterEntityFields][] = [
  [/^energy_(import|export)$/, (m) => ({ ...energy, name: `Energy ${m[1]}` })],
  [
    /^energy_(import|export)_t(\d{1,2})$/,
    (m) => ({ ...energy, name: `Energy ${m[1]} tariff ${Number(m[2])}` }),
  ],
  [/^power_(import|export)$/, (m) => ({ ...power, name: `Power ${m[1]}` })],
  [/^power_(import|export)_(l[123])$/, (m) => ({ ...power, name: `Power ${m[1]} ${phase(m[2])}` })],
  [
    /^voltage_(l[123])$/,
    (m) => ({
      name: `Voltage ${phase(m[1])}`,
      deviceClass: 'voltage',
      stateClass: 'measurement',
      unit: 'V',
      precision: 1,
    }),
  ],
  [
    /^current_(l[123])$/,
    (m) => ({
      name: `Current ${phase(m[1])}`,
      deviceClass: 'current',
      stateClass: 'measurement',
      unit: 'A',
      precision: 2,
    }),
  ],
  [/^gas(?:_(\d))?$/, (m) => ({ ...volume, name: `Gas${channel(m[1])}`, deviceClass: 'gas' })],
  [/^water(?:_(\d))?$/, (m) => ({ ...volume, name: `Water${channel(m[1])}`, deviceClass: 'water' })],
  [/^heat(?:_(\d))?$/, (m) => ({ ...energy, name: `Heat${channel(m[1])}` })],
  [/^demand_average$/, () => ({ ...power, name: 'Average demand (15 min)' })],
  [/^demand_peak_month$/, () => ({ ...power, name: 'Peak demand this month' })],
  [/^power_failures$/, () => ({ ...counter, name: 'Power failures' })],
  [/^power_failures_long$/, () => ({ ...counter, name: 'Long power failures' })],
  [/^voltage_(sags|swells)_(l[123])$/, (m) => ({ ...counter, name: `Voltage ${m[1]} ${phase(m[2])}` })],
];

/** The entity of a meter state key; none for a key it does not know. */
export function meterEntity(key: string): EntitySpec | undefined {
  for (const [pattern, fields] of METER_KEYS) {
    const m = pattern.exec(key);
    if (m) return { component: 'sensor', object: key, state: 'meter', ...fields(m) };
  }
  return undefined;
}

/**
 * The meter state of a snapshot: registers in kWh, gas and water in m³, power in W, one key per
 * value the meter sent (an M-Bus kind seen once is `gas`, several are `gas_<channel>`).
 */
export function meterValues(s: MeterSnapshot): Record<string, number> {
  const v: Record<string, number> = { energy_import: kWh(s.importWh), energy_export: kWh(s.exportWh) };
  const tariffs = (way: 'import' | 'export', registers: Record<string, number>) => {
    for (const [tariff, wh] of Object.entries(registers))
      if (/^\d{1,2}$/.test(tariff)) v[`energy_${way}_t${Number(tariff)}`] = kWh(wh);
  };
  tariffs('import', s.importByTariffWh);
  tariffs('export', s.exportByTariffWh);
  if (s.powerImportW !== undefined) v.power_import = s.powerImportW;
  if (s.powerExportW !== undefined) v.power_export = s.powerExportW;
  for (const [phase, values] of Object.entries(s.phases ?? {})) {
    const p = phase.toLowerCase();
    if (values.voltageV !== undefined) v[`voltage_${p}`] = values.voltageV;
    if (values.currentA !== undefined) v[`current_${p}`] = values.currentA;
    if (values.powerImportW !== undefined) v[`power_import_${p}`] = values.powerImportW;
    if (values.powerExportW !== undefined) v[`power_export_${p}`] = values.powerExportW;
  }
  for (const m of s.mbus) {
    const several = s.mbus.filter((o) => o.kind === m.kind).length > 1;
    const key = several ? `${m.kind}_${m.channel}` : m.kind;
    if ((m.kind === 'gas' || m.kind === 'water') && m.litres !== undefined) v[key] = m.litres / 1000;
    if (m.kind === 'heat' && m.wh !== undefined) v[key] = kWh(m.wh);
  }
  if (s.peaks?.currentAverageW !== undefined) v.demand_average = s.peaks.currentAverageW;
  if (s.peaks?.monthMaxW !== undefined) v.demand_peak_month = s.peaks.monthMaxW;
  if (s.powerFailures !== undefined) v.power_failures = s.powerFailures;
  if (s.longPowerFailures !== undefined) v.power_failures_long = s.longPowerFailures;
  for (const [kind, counts] of [
    ['sags', s.voltageSags],
    ['swells', s.voltageSwells],
  ] as const)
    for (const [phase, n] of Object.entries(counts ?? {})) v[`voltage_${kind}_${phase.toLowerCase()}`] = n;
  return v;
}

/** A snapshot's values and the entities that show them (a value no entity knows is not sent). */
export function meterUpdate(s: MeterSnapshot): { values: Record<string, number>; entities: EntitySpec[] } {
  const values = meterValues(s);
  const entities = Object.keys(values).flatMap((key) => meterEntity(key) ?? []);
  return { values, entities };
}

export const INTERVAL_ENTITIES: readonly EntitySpec[] = (['import', 'export'] as const).map((way) => ({
  component: 'sensor',
  object: `interval_${way}`,
  state: 'interval',
  name: `Last interval ${way}`,
  deviceClass: 'energy',
  stateClass: 'total',
  unit: 'kWh',
  precision: 3,
  lastResetField: 'start',
}));

/** The running bill's entity, in the tariff's currency (known from the first bill). */
export function billEntity(currency: string): EntitySpec {
  return {
    component: 'sensor',
    object: 'bill',
    state: 'bill',
    name: 'Running bill',
    deviceClass: 'monetary',
    stateClass: 'total',
    unit: currency,
    precision: 2,
    lastResetField: 'period_start',
  };
}

/** Where the household's DR stands now, the most engaged of its bids first. */
export const DR_STATES = ['none', 'offered', 'bid', 'accepted', 'shedding', 'overridden'] as const;
export type DrState = (typeof DR_STATES)[number];

const LINK_STATES: readonly LinkState[] = [
  'connecting',
  'attesting',
  'trusted',
  'untrusted',
  'offline',
  'stopped',
];

export const STATUS_ENTITIES: readonly EntitySpec[] = [
  {
    component: 'sensor',
    object: 'dr_state',
    state: 'dr',
    name: 'Demand response',
    deviceClass: 'enum',
    options: DR_STATES,
    attributesField: 'events',
  },
  {
    component: 'sensor',
    object: 'dr_open_events',
    state: 'dr',
    name: 'Open DR events',
    stateClass: 'measurement',
    precision: 0,
  },
  {
    component: 'button',
    object: 'dr_override',
    name: 'Override demand response',
  },
  {
    component: 'sensor',
    object: 'tre_trust',
    state: 'tre',
    name: 'TRE trust',
    deviceClass: 'enum',
    options: LINK_STATES,
    diagnostic: true,
  },
];

/** Who the entities belong to: this box (one device per meter agent). */
export interface HomeDevice {
  node: string;
  version: string;
}

/** The discovery topic and config (a JSON object) of an entity; published retained. */
export function discoveryConfig(
  prefix: string,
  device: HomeDevice,
  entity: EntitySpec,
): { topic: string; config: Record<string, unknown> } {
  const { node } = device;
  const uniqueId = `${node}_${entity.object}`;
  const config: Record<string, unknown> = {
    name: entity.name,
    unique_id: uniqueId,
    availability_topic: homeTopics.availability(node),
    payload_available: 'online',
    payload_not_available: 'offline',
    device: {
      identifiers: [`meter-agent_${node}`],
      name: 'Smart meter',
      manufacturer: 'tre-stack',
      model: 'meter-agent',
      sw_version: device.version,
    },
    origin: { name: 'meter-agent', sw: device.version },
  };
  if (entity.component === 'button') {
    config.command_topic = homeTopics.command(node, 'dr-override');
    config.payload_press = 'PRESS';
  } else {
    const field = entity.object;
    config.state_topic = homeTopics.state(node, entity.state!);
    config.value_template = `{{ value_json.${field} }}`;
    if (entity.attributesField) {
      config.json_attributes_topic = config.state_topic;
      config.json_attributes_template = `{{ {'${entity.attributesField}': value_json.${entity.attributesField}} | tojson }}`;
    }
  }
  if (entity.deviceClass) config.device_class = entity.deviceClass;
  if (entity.stateClass) config.state_class = entity.stateClass;
  if (entity.unit) config.unit_of_measurement = entity.unit;
  if (entity.precision !== undefined) config.suggested_display_precision = entity.precision;
  if (entity.options) config.options = entity.options;
  if (entity.diagnostic) config.entity_category = 'diagnostic';
  if (entity.lastResetField) config.last_reset_value_template = `{{ value_json.${entity.lastResetField} }}`;
  return { topic: homeTopics.discovery(prefix, entity.component, node, entity.object), config };
}

/** The `interval` state of a closed interval. */
export function intervalState(record: IntervalRecord): Record<string, unknown> {
  const start = Date.parse(record.intervalStart);
  return {
    start: record.intervalStart,
    end: new Date(start + record.intervalMinutes * 60_000).toISOString(),
    interval_import: kWh(record.importWh),
    interval_export: kWh(record.exportWh),
  };
}

/** The `bill` state: the running total in the currency's major unit (minor units / 100). */
export function billState(bill: NonNullable<AgentStatus['runningBill']>): Record<string, unknown> {
  return { bill: bill.totalMinor / 100, currency: bill.currency, period_start: bill.periodStart };
}

/** Where a proposal stands at `nowMs`, as the DR state names it. */
function proposalState(p: Proposal, nowMs: number): DrState | undefined {
  const { status } = p;
  if (status === 'overridden') return 'overridden';
  if (status === 'proposed') return 'offered';
  if (status === 'bid') return 'bid';
  if (status !== 'accepted') return undefined;
  const inWindow = p.loads.some((l) => Date.parse(l.from) <= nowMs && nowMs < Date.parse(l.to));
  return inWindow ? 'shedding' : 'accepted';
}

/**
 * The `dr` state: the most engaged state of the proposals still to come or under way (shedding
 * over accepted over bid over offered), the open events, and the recent bids as attributes.
 */
export function drState(status: Pick<AgentStatus, 'openEvents' | 'proposals'>, nowMs: number) {
  const live = status.proposals.filter(
    (p) => p.loads.some((l) => Date.parse(l.to) > nowMs) || p.status === 'proposed',
  );
  const rank: DrState[] = ['shedding', 'accepted', 'overridden', 'bid', 'offered'];
  const states = new Set(live.map((p) => proposalState(p, nowMs)));
  return {
    dr_state: rank.find((s) => states.has(s)) ?? 'none',
    dr_open_events: status.openEvents.length,
    events: status.proposals.slice(-10).map((p) => ({
      event: p.eventId,
      status: p.status,
      kwh: kWh(p.quantityWh),
      from: p.loads.map((l) => l.from).sort()[0] ?? p.windowStart,
      to:
        p.loads
          .map((l) => l.to)
          .sort()
          .at(-1) ?? p.windowStart,
    })),
  };
}

/** A state to publish and the entities that read it. */
export interface HomeStateUpdate {
  state: HomeState;
  payload: Record<string, unknown>;
  entities: readonly EntitySpec[];
}

/** The bill, DR and trust states of the agent's status at `nowMs` (no bill state before the first bill). */
export function statusStates(status: AgentStatus, nowMs: number): HomeStateUpdate[] {
  const [dr, override, trust] = [STATUS_ENTITIES.slice(0, 2), STATUS_ENTITIES[2]!, STATUS_ENTITIES[3]!];
  return [
    ...(status.runningBill
      ? [
          {
            state: 'bill' as const,
            payload: billState(status.runningBill),
            entities: [billEntity(status.runningBill.currency)],
          },
        ]
      : []),
    { state: 'dr', payload: drState(status, nowMs), entities: [...dr, override] },
    { state: 'tre', payload: { tre_trust: status.trust }, entities: [trust] },
  ];
}

/** The interval state and its entities. */
export function intervalUpdate(record: IntervalRecord): HomeStateUpdate {
  return { state: 'interval', payload: intervalState(record), entities: INTERVAL_ENTITIES };
}
