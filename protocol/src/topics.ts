/**
 * Every topic string of the system is built and parsed here.
 *
 *   tre/v1/<role>/<id>/<family>[/<param>]   a party's own subtree
 *   tre/v1/broadcast/<family>/<param>       read-only broadcasts from the TRE
 *
 * `up` families are published by the owning party to the TRE; `down` families are published by the
 * TRE to the owning party. The broker's access matrix is derived from this table.
 */
import { type Identity, isValidId, PARTY_ROLES, type PartyRole, parseIdentityParts } from './identity.js';
import { TOPIC_ROOT } from './version.js';

export type Direction = 'up' | 'down';

interface FamilySpec {
  roles: readonly PartyRole[];
  direction: Direction;
  /** Name of the trailing topic level, when the family has one. */
  param?: string;
}

const ALL: readonly PartyRole[] = PARTY_ROLES;

export const PARTY_FAMILIES = {
  reading: { roles: ['meter'], direction: 'up' },
  bid: { roles: ['meter'], direction: 'up' },
  override: { roles: ['meter'], direction: 'up' },
  attest: { roles: ALL, direction: 'up' },
  groups: { roles: ['dno'], direction: 'up' },
  tariff: { roles: ['supplier'], direction: 'up' },
  'billing-period': { roles: ['supplier'], direction: 'up' },
  'statement-ack': { roles: ['supplier'], direction: 'up' },
  event: { roles: ['dsm'], direction: 'up' },
  accept: { roles: ['dsm'], direction: 'up', param: 'eventId' },
  cancel: { roles: ['dsm'], direction: 'up', param: 'eventId' },
  modify: { roles: ['dsm'], direction: 'up', param: 'eventId' },
  registry: { roles: ['regulator'], direction: 'up' },
  config: { roles: ['regulator'], direction: 'up' },
  inbox: { roles: ALL, direction: 'down', param: 'kind' },
  aggregate: { roles: ['dno'], direction: 'down', param: 'groupId' },
  statement: { roles: ['supplier'], direction: 'down' },
  bids: { roles: ['dsm'], direction: 'down', param: 'eventId' },
  compliance: { roles: ['dsm'], direction: 'down', param: 'eventId' },
} as const satisfies Record<string, FamilySpec>;

export type PartyFamily = keyof typeof PARTY_FAMILIES;

export const BROADCAST_FAMILIES = {
  tariff: { param: 'supplierId' },
  'dr-event': { param: 'eventId' },
} as const;

export type BroadcastFamily = keyof typeof BROADCAST_FAMILIES;

export const INBOX_KINDS = ['receipt', 'attestation', 'bill', 'statement', 'dr-outcome', 'alert'] as const;
export type InboxKind = (typeof INBOX_KINDS)[number];

export type ParsedTopic =
  | { scope: 'party'; owner: Identity & { role: PartyRole }; family: PartyFamily; param?: string }
  | { scope: 'broadcast'; family: BroadcastFamily; param: string };

function familySpec(family: PartyFamily): FamilySpec {
  return PARTY_FAMILIES[family];
}

/** Parses a concrete topic (no wildcards). Returns undefined for anything outside the contract. */
export function parseTopic(topic: string): ParsedTopic | undefined {
  const prefix = `${TOPIC_ROOT}/`;
  if (!topic.startsWith(prefix)) return undefined;
  const levels = topic.slice(prefix.length).split('/');
  if (levels[0] === 'broadcast') {
    const [, family, param, ...rest] = levels;
    if (rest.length > 0 || family === undefined || param === undefined || !isValidId(param)) return undefined;
    if (!Object.hasOwn(BROADCAST_FAMILIES, family)) return undefined;
    return { scope: 'broadcast', family: family as BroadcastFamily, param };
  }
  const [role, id, family, param, ...rest] = levels;
  if (rest.length > 0 || role === undefined || id === undefined || family === undefined) return undefined;
  const owner = parseIdentityParts(role, id);
  if (!owner || owner.role === 'tre') return undefined;
  if (!Object.hasOwn(PARTY_FAMILIES, family)) return undefined;
  const spec = familySpec(family as PartyFamily);
  if (!spec.roles.includes(owner.role)) return undefined;
  if (spec.param === undefined) {
    if (param !== undefined) return undefined;
    return { scope: 'party', owner: { role: owner.role, id: owner.id }, family: family as PartyFamily };
  }
  if (param === undefined || !isValidId(param)) return undefined;
  if (family === 'inbox' && !(INBOX_KINDS as readonly string[]).includes(param)) return undefined;
  return { scope: 'party', owner: { role: owner.role, id: owner.id }, family: family as PartyFamily, param };
}

/** `tre/v1/<role>/<id>/<family>`, for a role that has the family. */
function familyBase(owner: Identity, family: PartyFamily): string {
  if (owner.role === 'tre' || !familySpec(family).roles.includes(owner.role)) {
    throw new TypeError(`role ${owner.role} has no ${family} topic`);
  }
  return `${TOPIC_ROOT}/${owner.role}/${checkId(owner.id)}/${family}`;
}

function party(owner: Identity, family: PartyFamily, param?: string): string {
  const spec = familySpec(family);
  const base = familyBase(owner, family);
  if (spec.param === undefined) return base;
  if (param === undefined) throw new TypeError(`${family} topic needs a ${spec.param}`);
  return `${base}/${checkId(param)}`;
}

/** The topic string of a parsed party topic (`parseTopic`'s inverse). */
export function partyTopic(parsed: Extract<ParsedTopic, { scope: 'party' }>): string {
  return party(parsed.owner, parsed.family, parsed.param);
}

/** Subscription filter for every parameter of one of a party's families (`.../<family>/+`). */
function partyFilter(owner: Identity, family: PartyFamily): string {
  const spec = familySpec(family);
  if (spec.param === undefined) throw new TypeError(`${family} topic has no parameter level`);
  return `${familyBase(owner, family)}/+`;
}

function broadcastFilter(family: BroadcastFamily): string {
  return `${TOPIC_ROOT}/broadcast/${family}/+`;
}

function checkId(id: string): string {
  if (!isValidId(id)) throw new TypeError(`${JSON.stringify(id)} is not a valid topic id`);
  return id;
}

const meter = (id: string): Identity => ({ role: 'meter', id });
const dno = (id: string): Identity => ({ role: 'dno', id });
const supplier = (id: string): Identity => ({ role: 'supplier', id });
const dsm = (id: string): Identity => ({ role: 'dsm', id });
const regulator = (id: string): Identity => ({ role: 'regulator', id });

/** Topic builders, one per row of the contract. */
export const topics = {
  reading: (meterId: string) => party(meter(meterId), 'reading'),
  bid: (meterId: string) => party(meter(meterId), 'bid'),
  /** The household takes back its accepted shed (`drOverrideSchema`). */
  drOverride: (meterId: string) => party(meter(meterId), 'override'),
  attest: (who: Identity) => party(who, 'attest'),
  inbox: (who: Identity, kind: InboxKind) => party(who, 'inbox', kind),
  /** Subscription filter for all of a party's inbox kinds. */
  inboxFilter: (who: Identity) => partyFilter(who, 'inbox'),
  groups: (dnoId: string) => party(dno(dnoId), 'groups'),
  aggregate: (dnoId: string, groupId: string) => party(dno(dnoId), 'aggregate', groupId),
  /** Subscription filter for the totals of all of a DNO's groups. */
  aggregateFilter: (dnoId: string) => partyFilter(dno(dnoId), 'aggregate'),
  tariff: (supplierId: string) => party(supplier(supplierId), 'tariff'),
  billingPeriod: (supplierId: string) => party(supplier(supplierId), 'billing-period'),
  statement: (supplierId: string) => party(supplier(supplierId), 'statement'),
  statementAck: (supplierId: string) => party(supplier(supplierId), 'statement-ack'),
  drEvent: (dsmId: string) => party(dsm(dsmId), 'event'),
  pseudoBids: (dsmId: string, eventId: string) => party(dsm(dsmId), 'bids', eventId),
  /** Subscription filter for the pseudo-bids of all of a DSM's events. */
  pseudoBidsFilter: (dsmId: string) => partyFilter(dsm(dsmId), 'bids'),
  accept: (dsmId: string, eventId: string) => party(dsm(dsmId), 'accept', eventId),
  /** The DSM cancels its event (`drCancelSchema`, signed). */
  drCancel: (dsmId: string, eventId: string) => party(dsm(dsmId), 'cancel', eventId),
  /** The DSM modifies its event's terms (`drModifySchema`, signed). */
  drModify: (dsmId: string, eventId: string) => party(dsm(dsmId), 'modify', eventId),
  compliance: (dsmId: string, eventId: string) => party(dsm(dsmId), 'compliance', eventId),
  /** Subscription filter for the compliance reports of all of a DSM's events. */
  complianceFilter: (dsmId: string) => partyFilter(dsm(dsmId), 'compliance'),
  registry: (regulatorId: string) => party(regulator(regulatorId), 'registry'),
  regulatorConfig: (regulatorId: string) => party(regulator(regulatorId), 'config'),
  broadcastTariff: (supplierId: string) => `${TOPIC_ROOT}/broadcast/tariff/${checkId(supplierId)}`,
  broadcastDrEvent: (eventId: string) => `${TOPIC_ROOT}/broadcast/dr-event/${checkId(eventId)}`,
  /** Subscription filter for every supplier's tariff broadcast. */
  broadcastTariffFilter: broadcastFilter('tariff'),
  /** Subscription filter for every open DR event's broadcast. */
  broadcastDrEventFilter: broadcastFilter('dr-event'),
  broadcastAll: `${TOPIC_ROOT}/broadcast/#`,
  /**
   * Every meter's readings: a filter no party of the TRE may use (the access matrix refuses it),
   * for a plain relay broker's subscriber in a benchmark baseline.
   */
  everyReadingFilter: `${TOPIC_ROOT}/meter/+/reading`,
} as const;

/**
 * The subscription filters a party may use: its own `down` families (with `+` for the parameter)
 * and the broadcasts. A requested filter is allowed only if every topic it can match is matched
 * by one of these (see `filterCovers`).
 */
export function allowedSubscriptions(who: Identity): string[] {
  if (who.role === 'tre') return [];
  const role = who.role;
  const filters: string[] = [];
  for (const [family, spec] of Object.entries(PARTY_FAMILIES) as [PartyFamily, FamilySpec][]) {
    if (spec.direction !== 'down' || !spec.roles.includes(role)) continue;
    filters.push(spec.param === undefined ? familyBase(who, family) : partyFilter(who, family));
  }
  for (const family of Object.keys(BROADCAST_FAMILIES) as BroadcastFamily[])
    filters.push(broadcastFilter(family));
  return filters;
}

/** May `who` publish to `topic`? Only to its own `up` families. */
export function mayPublish(who: Identity, topic: string): boolean {
  const parsed = parseTopic(topic);
  if (parsed?.scope !== 'party') return false;
  return (
    parsed.owner.role === who.role &&
    parsed.owner.id === who.id &&
    familySpec(parsed.family).direction === 'up'
  );
}

/** May `who` subscribe with `filter`? */
export function maySubscribe(who: Identity, filter: string): boolean {
  return allowedSubscriptions(who).some((allowed) => filterCovers(allowed, filter));
}

/**
 * True when every topic matched by `filter` is also matched by `allowed` (MQTT filter subsumption).
 * `+` in `allowed` covers one level (literal or `+`), `#` covers the rest; a `#` in `filter` is only
 * covered by `#`. Topics starting with `$` are never covered.
 */
export function filterCovers(allowed: string, filter: string): boolean {
  if (filter.startsWith('$')) return false;
  const a = allowed.split('/');
  const f = filter.split('/');
  for (let i = 0; i < a.length; i++) {
    const al = a[i]!;
    if (al === '#') return true;
    const fl = f[i];
    if (fl === undefined) return false;
    if (fl === '#') return false;
    if (al === '+') continue;
    if (fl === '+' || fl !== al) return false;
  }
  return a.length === f.length;
}
