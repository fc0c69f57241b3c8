import { describe, expect, it } from 'vitest';
import { checkGroups } from '../src/monitoring/group-rules.js';

const ids = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => `m${from + i}`);
const dno = new Set(ids(0, 300));

describe('group rules', () => {
  it('accepts disjoint and nested designs', () => {
    expect(
      checkGroups(
        [
          { groupId: 'a', meters: ids(0, 50) },
          { groupId: 'b', meters: ids(50, 100) },
        ],
        [],
        dno,
        50,
      ),
    ).toBeUndefined();
    expect(
      checkGroups([{ groupId: 'all', meters: ids(0, 100) }], [{ groupId: 'a', meters: ids(0, 50) }], dno, 50),
    ).toBeUndefined();
  });
  it('refuses groups below the minimum, never below 2', () => {
    expect(checkGroups([{ groupId: 'a', meters: ids(0, 49) }], [], dno, 50)).toMatchObject({
      reason: 'GROUP_TOO_SMALL',
    });
    expect(checkGroups([{ groupId: 'a', meters: ids(0, 1) }], [], dno, 0)).toMatchObject({
      reason: 'GROUP_TOO_SMALL',
    });
  });
  it('refuses a group that isolates a household by set difference, against new and existing groups', () => {
    const a = { groupId: 'a', meters: ids(0, 60) };
    expect(checkGroups([{ groupId: 'b', meters: ids(0, 59) }], [a], dno, 50)).toMatchObject({
      reason: 'GROUP_ISOLATES_HOUSEHOLD',
    });
    expect(checkGroups([a, { groupId: 'b', meters: ids(1, 61) }], [], dno, 50)).toMatchObject({
      reason: 'GROUP_ISOLATES_HOUSEHOLD',
    });
  });
  it('refuses foreign meters, duplicates and redefinitions', () => {
    expect(checkGroups([{ groupId: 'a', meters: [...ids(0, 49), 'other'] }], [], dno, 50)).toMatchObject({
      reason: 'NOT_AUTHORIZED',
    });
    expect(checkGroups([{ groupId: 'a', meters: [...ids(0, 50), 'm0'] }], [], dno, 50)).toMatchObject({
      reason: 'MALFORMED',
    });
    expect(
      checkGroups([{ groupId: 'a', meters: ids(100, 150) }], [{ groupId: 'a', meters: ids(0, 50) }], dno, 50),
    ).toMatchObject({
      reason: 'MALFORMED',
      message: /cannot be redefined/,
    });
  });
});
