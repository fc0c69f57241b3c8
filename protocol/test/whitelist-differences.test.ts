/**
 * What the verifier's `whitelist` check says when a TRE's measurement differs from the regulator's
 * whitelist: one readable line per component (pure; the whole verifier is in
 * tre-broker/test/quote-verifier.test.ts and the swtpm tests).
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { listDifferences, whitelistDifferences } from '../src/quote-verifier.js';

const digest = (content: string) => createHash('sha256').update(content).digest('hex');
const ev = (description: string, content = description) => ({ description, digest: digest(content) });
const policyOf = (...events: { description: string; digest: string }[]) => ({ eventDigests: events });

const release = [
  ev('workspace tre-broker'),
  ev('npm aedes@1.2.0 node_modules/aedes'),
  ev('npm @peculiar/x509@2.2.0 node_modules/@peculiar/x509'),
  ev('native node_modules/better-sqlite3/build/Release/better_sqlite3.node'),
  ev('node binary'),
  ev('shared object /usr/lib/x86_64-linux-gnu/libc.so.6'),
  ev('shared object /usr/lib/x86_64-linux-gnu/libcrypto.so.3'),
  ev('config clockSpeed=1000'),
];

describe('whitelistDifferences', () => {
  it('is empty for the whitelisted release, in any order', () => {
    expect(whitelistDifferences(policyOf(...release), release)).toEqual([]);
    expect(whitelistDifferences(policyOf(...release), [...release].reverse())).toEqual([]);
  });

  it('a changed file: same description, another digest', () => {
    const log = release.map((e) => (e.description.startsWith('native ') ? ev(e.description, 'rebuilt') : e));
    expect(whitelistDifferences(policyOf(...release), log)).toEqual([
      'native node_modules/better-sqlite3/build/Release/better_sqlite3.node differs from the whitelisted release (changed file)',
    ]);
  });

  it('another version or value of a whitelisted component names what the regulator whitelists', () => {
    const log = release.map((e) =>
      e.description === 'npm @peculiar/x509@2.2.0 node_modules/@peculiar/x509'
        ? ev('npm @peculiar/x509@2.3.0 node_modules/@peculiar/x509')
        : e.description === 'config clockSpeed=1000'
          ? ev('config clockSpeed=1')
          : e.description.endsWith('libcrypto.so.3')
            ? ev('shared object /usr/lib/x86_64-linux-gnu/libcrypto.so.1.1')
            : e,
    );
    expect(whitelistDifferences(policyOf(...release), log)).toEqual([
      'npm @peculiar/x509@2.3.0 node_modules/@peculiar/x509 is not whitelisted (the regulator whitelists npm @peculiar/x509@2.2.0 node_modules/@peculiar/x509)',
      'shared object /usr/lib/x86_64-linux-gnu/libcrypto.so.1.1 is not whitelisted (the regulator whitelists shared object /usr/lib/x86_64-linux-gnu/libcrypto.so.3)',
      'config clockSpeed=1 is not whitelisted (the regulator whitelists config clockSpeed=1000)',
    ]);
  });

  it('an extra component (a preloaded library, a new dependency) and a missing one', () => {
    const log = [
      ...release.filter((e) => e.description !== 'node binary'),
      ev('shared object /tmp/libhook.so'),
      ev('npm left-pad@1.3.0 node_modules/left-pad'),
    ];
    expect(whitelistDifferences(policyOf(...release), log)).toEqual([
      "shared object /tmp/libhook.so is not on the regulator's whitelist (an extra component, e.g. a preloaded library)",
      "npm left-pad@1.3.0 node_modules/left-pad is not on the regulator's whitelist (an extra component, e.g. a preloaded library)",
      "node binary is missing from the TRE's measurement",
    ]);
  });

  it('a whitelist of two releases: the other release is not missing', () => {
    const next = [ev('workspace tre-broker', 'release 2'), ev('npm aedes@1.3.0 node_modules/aedes')];
    const policy = policyOf(...release, ...next);
    expect(whitelistDifferences(policy, release)).toEqual([]);
    expect(whitelistDifferences(policy, [...release.slice(2), ...next])).toEqual([]);
  });

  it('lists every difference; the verdict shows the first ten and how many more', () => {
    const log = Array.from({ length: 13 }, (_, i) => ev(`shared object /opt/x/lib${i}.so`));
    const differences = whitelistDifferences(policyOf(), log);
    expect(differences).toHaveLength(13);
    const text = listDifferences(differences);
    expect(text.split('; ')).toHaveLength(11);
    expect(text).toMatch(/lib9\.so is not on .*; and 3 more$/);
    expect(text).not.toMatch(/lib10\.so/);
    expect(listDifferences(differences.slice(0, 2))).toBe(differences.slice(0, 2).join('; '));
  });
});
