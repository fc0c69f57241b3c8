/** The regulator CA's record of what it issued survives concurrent use. */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PARTY_ROLES, type PartyRole } from '@tre/protocol';
import { CertificateAuthority } from '@tre/tre-broker';
import { describe, expect, it } from 'vitest';

describe('certificate authority index', () => {
  it('concurrent issues and a revocation: every certificate recorded once, index.json stays valid JSON', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'ca-index-')), 'pki');
    const { ca } = await CertificateAuthority.initForDevelopment(dir);
    await Promise.all(Array.from({ length: 40 }, (_, i) => ca.issue('meter', `m${i}`)));
    const [revoked] = await Promise.all([ca.revoke('meter', 'm7'), ca.issue('dno', 'd1')]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
      role: string;
      id: string;
      serial: string;
      revokedAt?: string;
    }[];
    const meters = index.filter((e) => e.role === 'meter').map((e) => e.id);
    expect(new Set(meters).size).toBe(40);
    expect(meters).toHaveLength(40);
    expect(index.some((e) => e.role === 'dno' && e.id === 'd1')).toBe(true);
    expect(index.filter((e) => e.revokedAt).map((e) => e.serial)).toEqual(revoked);
  });
});

describe('certificate authority roles', () => {
  it('issues certificates only for party roles, and says which they are', async () => {
    const { ca } = await CertificateAuthority.initForDevelopment(
      join(await mkdtemp(join(tmpdir(), 'ca-roles-')), 'pki'),
    );
    await expect(ca.issue('tre' as PartyRole, 'x')).rejects.toThrow(
      `role must be one of ${PARTY_ROLES.join(', ')}`,
    );
    await expect(ca.issue('admin' as PartyRole, 'x')).rejects.toThrow(/meter, dno, supplier, dsm, regulator/);
  });
});
