/**
 * What the TRE tells households about DR events, always signed with its key: the event's
 * announcement on `broadcast/dr-event/{e}` (the same for every household, so the DSM and everyone
 * else see one public message per step: raised, modified, cancelled), and outcome rounds on each
 * household's own `inbox/dr-outcome`, one TRE signature per round (a Merkle tree over one salted
 * leaf per household, each household getting its own leaf, its proof and the signed root).
 */
import { randomBytes } from 'node:crypto';
import {
  type DrAnnouncement,
  type DrOutcome,
  type DrOutcomeKind,
  type DrOutcomeRoot,
  drOutcomeTree,
  PROTOCOL_VERSION,
  signContent,
  topics,
} from '@tre/protocol';
import type { FlowBase } from '../flow-base.js';
import { shuffled } from './pseudonyms.js';

/** Random bytes per outcome leaf: 128 bits, so a sibling hash cannot be brute-forced. */
const SALT_BYTES = 16;

export type NoticeDeps = Pick<FlowBase, 'outbound' | 'clock' | 'signingKey'>;

/** Signs and broadcasts an event's announcement; `retain` keeps it for agents connecting later. */
export async function announce(
  deps: NoticeDeps,
  announcement: DrAnnouncement,
  retain: boolean,
): Promise<void> {
  const jws = await signContent('drAnnouncement', announcement, deps.signingKey);
  await deps.outbound.publish(
    topics.broadcastDrEvent(announcement.event.eventId),
    JSON.stringify({ v: PROTOCOL_VERSION, jws }),
    { retain },
  );
}

/** Clears an event's retained announcement. */
export async function clearAnnouncement(deps: NoticeDeps, eventId: string): Promise<void> {
  await deps.outbound.publish(topics.broadcastDrEvent(eventId), '', { retain: true });
}

/**
 * Tells every household of a round its outcome with one TRE signature: the leaves (each with
 * 128 fresh random bits, in random order, so neither a sibling hash nor a leaf's position says
 * anything about another household) form a Merkle tree whose root is signed once; each household
 * gets its own leaf, its inclusion proof and the signed root.
 */
export async function notifyRound(
  deps: NoticeDeps,
  eventId: string,
  kind: DrOutcomeKind,
  outcomes: Pick<DrOutcome, 'meterId' | 'bidId' | 'outcome' | 'creditMicroMinor'>[],
): Promise<void> {
  if (outcomes.length === 0) return;
  const salts = randomBytes(SALT_BYTES * outcomes.length);
  const leaves: DrOutcome[] = shuffled(outcomes).map((o, i) => ({
    v: PROTOCOL_VERSION,
    eventId,
    kind,
    ...o,
    salt: salts.subarray(i * SALT_BYTES, (i + 1) * SALT_BYTES).toString('base64url'),
  }));
  const tree = drOutcomeTree(leaves);
  const root: DrOutcomeRoot = {
    v: PROTOCOL_VERSION,
    eventId,
    kind,
    root: tree.root,
    leafCount: tree.leafCount,
    issuedAt: new Date(deps.clock.now()).toISOString(),
  };
  const jws = await signContent('drOutcome', root, deps.signingKey);
  // What router.reply would send, with each notice's JSON text built by the tree (reusing the
  // leaf's canonical text) instead of re-serialised: a round may have 100,000 households.
  for (const [i, leaf] of leaves.entries())
    await deps.outbound.publish(
      topics.inbox({ role: 'meter', id: leaf.meterId }, 'dr-outcome'),
      tree.notice(i, jws),
    );
}
