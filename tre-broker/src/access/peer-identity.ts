/**
 * Identity comes only from the verified peer certificate: exactly one SAN URI `urn:tre:<role>:<id>`
 * with a party role. The MQTT client id, username and payloads never count.
 */
import type { KeyObject, X509Certificate } from 'node:crypto';
import { type Identity, isPartyRole, type PartyRole, parseIdentity } from '@tre/protocol';

export interface PeerIdentity extends Identity {
  role: PartyRole;
  /** Certificate serial, lower-case hex, for revocation checks. */
  serial: string;
  /** The certificate's public key: verifies what this party signs (tariffs, events, registry). */
  publicKey: KeyObject;
}

export class PeerIdentityError extends Error {
  override readonly name = 'PeerIdentityError';
  readonly code = 'PEER_IDENTITY';
}

export function identityFromCertificate(cert: X509Certificate | undefined): PeerIdentity {
  if (!cert) throw new PeerIdentityError('no client certificate');
  const uris = (cert.subjectAltName ?? '')
    .split(', ')
    .filter((n) => n.startsWith('URI:'))
    .map((n) => n.slice(4));
  const tre = uris.filter((u) => u.startsWith('urn:tre:'));
  if (tre.length !== 1)
    throw new PeerIdentityError(`certificate must carry exactly one urn:tre: SAN URI, found ${tre.length}`);
  const identity = parseIdentity(tre[0]!);
  if (!isPartyRole(identity.role))
    throw new PeerIdentityError(`role ${identity.role} cannot connect as a client`);
  return {
    role: identity.role,
    id: identity.id,
    serial: cert.serialNumber.toLowerCase().replace(/^0+(?=.)/, ''),
    publicKey: cert.publicKey,
  };
}

/** What a log line at info level or above may say about a party: never a household's id. */
export function loggableIdentity(identity: Identity): { role: string; id?: string } {
  return identity.role === 'meter' ? { role: identity.role } : { role: identity.role, id: identity.id };
}
