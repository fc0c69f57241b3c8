/**
 * Identities are SAN URIs `urn:tre:<role>:<id>` in X.509 certificates. The id charset is restricted
 * so that an id can never inject MQTT wildcards (`+`, `#`), level separators (`/`), or URN separators.
 */
export const PARTY_ROLES = ['meter', 'dno', 'supplier', 'dsm', 'regulator'] as const;
/** `tre` is the TRE itself (server certificate); it never connects as an MQTT client. */
export const ROLES = [...PARTY_ROLES, 'tre'] as const;

export type PartyRole = (typeof PARTY_ROLES)[number];
export type Role = (typeof ROLES)[number];

export interface Identity {
  role: Role;
  id: string;
}

/** Lower-case letters, digits, `.`, `_`, `-`; starts with a letter or digit; 1..64 characters. */
export const ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export class IdentityError extends Error {
  readonly code = 'IDENTITY_INVALID';
  override readonly name = 'IdentityError';
}

export function isValidId(id: string): boolean {
  return ID_PATTERN.test(id);
}

export function isRole(value: string): value is Role {
  return (ROLES as readonly string[]).includes(value);
}

export function isPartyRole(value: string): value is PartyRole {
  return (PARTY_ROLES as readonly string[]).includes(value);
}

export function assertId(id: string, what = 'id'): string {
  if (!isValidId(id)) {
    throw new IdentityError(
      `${what} ${JSON.stringify(id)} is not valid: use 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
    );
  }
  return id;
}

export function formatIdentity(identity: Identity): string {
  if (!isRole(identity.role)) throw new IdentityError(`unknown role ${JSON.stringify(identity.role)}`);
  return `urn:tre:${identity.role}:${assertId(identity.id)}`;
}

export function parseIdentity(uri: string): Identity {
  const parts = uri.split(':');
  if (parts.length !== 4 || parts[0] !== 'urn' || parts[1] !== 'tre') {
    throw new IdentityError(`${JSON.stringify(uri)} is not an identity URI of the form urn:tre:<role>:<id>`);
  }
  const [, , role, id] = parts as [string, string, string, string];
  if (!isRole(role))
    throw new IdentityError(`unknown role ${JSON.stringify(role)} in ${JSON.stringify(uri)}`);
  return { role, id: assertId(id) };
}

/** Non-throwing variant for topic parsing. */
export function parseIdentityParts(role: string, id: string): Identity | undefined {
  if (!isRole(role) || !isValidId(id)) return undefined;
  return { role, id };
}
