/**
 * The access matrix, fixed in code. Each party publishes only to its own `up` topics, subscribes
 * only to its own `down` topics and the read-only broadcasts (see `@tre/protocol` topics table).
 * Clients never publish retained messages; only the TRE writes broadcasts and inboxes.
 */
import { mayPublish, maySubscribe } from '@tre/protocol';
import type { PeerIdentity } from './peer-identity.js';

export type AccessDecision = { allowed: true } | { allowed: false; reason: string };

export function authorizePublish(who: PeerIdentity, topic: string, retain: boolean): AccessDecision {
  if (retain) return { allowed: false, reason: 'clients may not publish retained messages' };
  if (!mayPublish(who, topic)) return { allowed: false, reason: `${who.role} may not publish to this topic` };
  return { allowed: true };
}

export function authorizeSubscribe(who: PeerIdentity, filter: string): AccessDecision {
  if (!maySubscribe(who, filter))
    return { allowed: false, reason: `${who.role} may not subscribe to this filter` };
  return { allowed: true };
}
