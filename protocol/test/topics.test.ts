import { describe, expect, it } from 'vitest';
import {
  allowedSubscriptions,
  filterCovers,
  formatIdentity,
  mayPublish,
  maySubscribe,
  PARTY_ROLES,
  parseIdentity,
  parseTopic,
  topics,
} from '../src/index.js';

describe('identity URIs', () => {
  it('round-trips', () => {
    expect(parseIdentity(formatIdentity({ role: 'meter', id: 'm-001' }))).toEqual({
      role: 'meter',
      id: 'm-001',
    });
  });
  it.each(['m+1', 'm#', 'a/b', 'A', '', 'x:y', '-lead', 'a'.repeat(65), 'm 1', 'mé'])(
    'refuses id %j',
    (id) => {
      expect(() => formatIdentity({ role: 'meter', id })).toThrow(/not valid/);
      expect(() => parseIdentity(`urn:tre:meter:${id}`)).toThrow();
    },
  );
  it('refuses unknown roles and shapes', () => {
    expect(() => parseIdentity('urn:tre:admin:x')).toThrow(/unknown role/);
    expect(() => parseIdentity('urn:other:meter:x')).toThrow();
    expect(() => parseIdentity('urn:tre:meter:x:y')).toThrow();
  });
});

describe('topics', () => {
  it('builds and parses every family', () => {
    expect(parseTopic(topics.reading('m1'))).toEqual({
      scope: 'party',
      owner: { role: 'meter', id: 'm1' },
      family: 'reading',
    });
    expect(parseTopic(topics.aggregate('d1', 'g1'))).toMatchObject({ family: 'aggregate', param: 'g1' });
    expect(parseTopic(topics.inbox({ role: 'dsm', id: 'x' }, 'receipt'))).toMatchObject({ param: 'receipt' });
    expect(parseTopic(topics.broadcastTariff('s1'))).toEqual({
      scope: 'broadcast',
      family: 'tariff',
      param: 's1',
    });
  });
  it('rejects topics outside the contract', () => {
    for (const t of [
      'tre/v1/meter/m1/groups',
      'tre/v1/dno/d1/reading',
      'tre/v1/meter/m1/reading/extra',
      'tre/v1/meter/m1/inbox/secret',
      'tre/v1/tre/t1/reading',
      'tre/v2/meter/m1/reading',
      'tre/v1/broadcast/other/x',
      'tre/v1/meter/M1/reading',
    ]) {
      expect(parseTopic(t), t).toBeUndefined();
    }
  });
  it('gives every party role an attest topic and an inbox', () => {
    for (const role of PARTY_ROLES) {
      expect(parseTopic(topics.attest({ role, id: 'a1' })), role).toMatchObject({ family: 'attest' });
      expect(parseTopic(topics.inbox({ role, id: 'a1' }, 'receipt')), role).toMatchObject({
        family: 'inbox',
      });
    }
  });
  it('builds the subscription filters for parameterised families and broadcasts', () => {
    expect(topics.inboxFilter({ role: 'meter', id: 'm1' })).toBe('tre/v1/meter/m1/inbox/+');
    expect(topics.aggregateFilter('d1')).toBe('tre/v1/dno/d1/aggregate/+');
    expect(topics.pseudoBidsFilter('x1')).toBe('tre/v1/dsm/x1/bids/+');
    expect(topics.complianceFilter('x1')).toBe('tre/v1/dsm/x1/compliance/+');
    expect(topics.broadcastTariffFilter).toBe('tre/v1/broadcast/tariff/+');
    expect(topics.broadcastDrEventFilter).toBe('tre/v1/broadcast/dr-event/+');
    expect(topics.everyReadingFilter).toBe('tre/v1/meter/+/reading');
    expect(filterCovers(topics.aggregateFilter('d1'), topics.aggregate('d1', 'g7'))).toBe(true);
    expect(filterCovers(topics.broadcastDrEventFilter, topics.broadcastDrEvent('e1'))).toBe(true);
    expect(filterCovers(topics.everyReadingFilter, topics.reading('m9'))).toBe(true);
  });
  it('every filter a party is given is one it may subscribe to', () => {
    const m1 = { role: 'meter', id: 'm1' } as const;
    for (const [who, filter] of [
      [m1, topics.inboxFilter(m1)],
      [m1, topics.broadcastTariffFilter],
      [m1, topics.broadcastDrEventFilter],
      [{ role: 'dno', id: 'd1' }, topics.aggregateFilter('d1')],
      [{ role: 'dsm', id: 'x1' }, topics.pseudoBidsFilter('x1')],
      [{ role: 'dsm', id: 'x1' }, topics.complianceFilter('x1')],
    ] as const) {
      expect(maySubscribe(who, filter), filter).toBe(true);
    }
    expect(maySubscribe({ role: 'dno', id: 'd1' }, topics.everyReadingFilter)).toBe(false);
  });
  it('filter builders refuse roles without the family and injected ids', () => {
    expect(() => topics.inboxFilter({ role: 'tre', id: 't1' })).toThrow(/no inbox topic/);
    expect(() => topics.aggregateFilter('d1/#')).toThrow(/not a valid topic id/);
    expect(() => topics.pseudoBidsFilter('+')).toThrow(/not a valid topic id/);
  });
  it('builders refuse injected ids', () => {
    expect(() => topics.reading('m1/#')).toThrow();
    expect(() => topics.aggregate('d1', '+')).toThrow();
  });
});

describe('filter coverage', () => {
  it.each([
    ['a/+/c', 'a/b/c', true],
    ['a/+/c', 'a/+/c', true],
    ['a/+/c', 'a/#', false],
    ['a/#', 'a/b/c', true],
    ['a/#', 'a', true], // MQTT: a/# also matches the parent level
    ['a/b', 'a/+', false],
    ['a/b', 'a/b/c', false],
    ['+/#', '$SYS/x', false],
  ])('%s covers %s: %s', (allowed, filter, expected) => {
    expect(filterCovers(allowed, filter)).toBe(expected);
  });
});

describe('access rules derived from the table', () => {
  const m1 = { role: 'meter', id: 'm1' } as const;
  it('a meter publishes only its own up topics', () => {
    expect(mayPublish(m1, topics.reading('m1'))).toBe(true);
    expect(mayPublish(m1, topics.reading('m2'))).toBe(false);
    expect(mayPublish(m1, topics.inbox(m1, 'receipt'))).toBe(false);
    expect(mayPublish(m1, topics.broadcastTariff('s1'))).toBe(false);
  });
  it('a meter subscribes to its inbox and broadcasts only', () => {
    expect(maySubscribe(m1, 'tre/v1/meter/m1/inbox/+')).toBe(true);
    expect(maySubscribe(m1, topics.inbox(m1, 'bill'))).toBe(true);
    expect(maySubscribe(m1, 'tre/v1/broadcast/tariff/+')).toBe(true);
    for (const f of [
      '#',
      'tre/#',
      'tre/v1/meter/+/reading',
      'tre/v1/meter/m2/inbox/+',
      'tre/v1/meter/m1/#',
    ]) {
      expect(maySubscribe(m1, f), f).toBe(false);
    }
  });
  it('lists the allowed filters', () => {
    expect(allowedSubscriptions({ role: 'dno', id: 'd1' })).toContain('tre/v1/dno/d1/aggregate/+');
  });
});
