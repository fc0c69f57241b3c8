/**
 * The grid parties see one system (issue 21): a DNO, supplier, DSM or regulator connects to any
 * shard and gets what a single TRE would give it.
 *  - In: a message a provider publishes that sets state every shard needs (the regulator's
 *    registry and configuration, tariffs and billing periods, statement acknowledgements, DNO
 *    groups, DR events and their cancellation or modification) is handled where it arrived and,
 *    once accepted there, passed to every other shard, which runs the same handler on it without
 *    answering (`InboundMessage.via`). Signed content is checked again by each shard's handler,
 *    against the sender's certificate key as the first shard saw it. The DSM's acceptance is not
 *    passed on: the round's gateway handles it (demand-response).
 *  - Out: what a shard publishes to a provider (aggregates, statements, pseudo-bids, compliance,
 *    alerts) is published here and by every other shard, so it reaches the provider wherever it is
 *    connected. Receipts and attestation answers stay on the shard the party is connected to.
 * Both cross NATS sealed to the receiving shard (ShardCluster.send), acknowledged once handled: a
 * replicated message the receiving shard could not store (STORAGE_UNAVAILABLE) is sent again by the
 * link, and the provider's receipt waits for every shard. A repeat after a receiving shard failed
 * over (its answer lost) is refused there as a duplicate by the family's own rules (REPLAYED,
 * TARIFF_OVERLAP, an existing group, the same event), or republished to the provider (out).
 */
import { createPublicKey } from 'node:crypto';
import {
  isPartyRole,
  mayPublish,
  type PartyFamily,
  type PartyRole,
  parseTopic,
  partyTopic,
} from '@tre/protocol';
import { z } from 'zod';
import type { PeerIdentity } from '../access/peer-identity.js';
import type { MessageRouter, Outbound } from '../broker/message-router.js';
import type { Logger } from '../log.js';
import { StoreError } from '../store/store.js';
import type { ShardCluster } from './shard-cluster.js';

/** The families whose accepted messages every shard handles. */
export const REPLICATED_FAMILIES: ReadonlySet<PartyFamily> = new Set<PartyFamily>([
  'registry',
  'config',
  'tariff',
  'billing-period',
  'statement-ack',
  'groups',
  'event',
  'cancel',
  'modify',
]);

const PROVIDER_ROLES: ReadonlySet<PartyRole> = new Set<PartyRole>(['dno', 'supplier', 'dsm', 'regulator']);
/** Answers to one connection: they go nowhere else. */
const LOCAL_INBOX_KINDS = new Set(['receipt', 'attestation']);

const INBOUND = 'provider.inbound';
const OUTBOUND = 'provider.outbound';

const inboundSchema = z.strictObject({
  from: z.strictObject({
    role: z.string(),
    id: z.string(),
    serial: z.string().max(64),
    /** The sender's certificate key, SPKI DER, base64. */
    publicKey: z.string().max(1024),
  }),
  topic: z.string().max(256),
  payload: z.string(),
});

const outboundSchema = z.strictObject({
  topic: z.string().max(256),
  payload: z.string(),
  retain: z.boolean().optional(),
});

/** Whether a publish to this topic goes to a provider wherever it is connected. */
export function relayedTopic(topic: string): boolean {
  const parsed = parseTopic(topic);
  if (parsed?.scope !== 'party' || !PROVIDER_ROLES.has(parsed.owner.role)) return false;
  // A round's bids go out from its gateway, the shard its DSM is connected to: relaying the whole
  // union (megabytes for a large round) to every shard would reach no one more.
  if (parsed.family === 'bids') return false;
  return !(parsed.family === 'inbox' && LOCAL_INBOX_KINDS.has(parsed.param ?? ''));
}

function others(cluster: ShardCluster): string[] {
  return cluster.shards.filter((s) => s !== cluster.shard);
}

/** An Outbound that also has every other shard publish what goes to a provider. */
export function relayedOutbound(local: Outbound, cluster: ShardCluster): Outbound {
  return {
    async publish(topic, payload, opts) {
      await local.publish(topic, payload, opts);
      if (!relayedTopic(topic)) return;
      const body = { topic, payload: payload.toString(), ...(opts?.retain && { retain: true }) };
      await Promise.all(others(cluster).map((s) => cluster.send(s, OUTBOUND, body)));
    },
  };
}

/**
 * Wires both directions: the router passes accepted provider messages on, and this shard handles
 * what other shards pass on and publishes what they relay (to its own connections only).
 */
export function relayProviders(deps: {
  cluster: ShardCluster;
  router: MessageRouter;
  /** This shard's own broker (publishes to its connections, never relayed again). */
  local: Outbound;
  log: Logger;
}): void {
  const { cluster, router, local, log } = deps;
  router.replicateWith(async (msg) => {
    if (!PROVIDER_ROLES.has(msg.from.role) || !REPLICATED_FAMILIES.has(msg.topic.family)) return;
    const body: z.infer<typeof inboundSchema> = {
      from: {
        role: msg.from.role,
        id: msg.from.id,
        serial: msg.from.serial,
        publicKey: msg.from.publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      },
      topic: partyTopic(msg.topic),
      payload: msg.payload.toString('base64'),
    };
    await Promise.all(others(cluster).map((s) => cluster.send(s, INBOUND, body)));
  });
  cluster.on(INBOUND, async (via, raw) => {
    const body = inboundSchema.parse(raw);
    const { role, id } = body.from;
    const topic = parseTopic(body.topic);
    if (
      !isPartyRole(role) ||
      !PROVIDER_ROLES.has(role) ||
      topic?.scope !== 'party' ||
      !REPLICATED_FAMILIES.has(topic.family) ||
      !mayPublish({ role, id }, body.topic)
    ) {
      log.warn(
        { via, family: topic?.scope === 'party' ? topic.family : undefined },
        'replicated message refused',
      );
      return;
    }
    const from: PeerIdentity = {
      role,
      id,
      serial: body.from.serial,
      publicKey: createPublicKey({
        key: Buffer.from(body.from.publicKey, 'base64'),
        format: 'der',
        type: 'spki',
      }),
    };
    const result = await router.route({ from, topic, payload: Buffer.from(body.payload, 'base64'), via });
    // Not stored here: the link answers so, and the origin shard sends it again.
    if (result?.status === 'refused' && result.reason === 'STORAGE_UNAVAILABLE')
      throw new StoreError('STORAGE_UNAVAILABLE', `a replicated ${topic.family} message was not stored here`);
  });
  cluster.on(OUTBOUND, async (from, raw) => {
    const body = outboundSchema.parse(raw);
    if (!relayedTopic(body.topic)) {
      log.warn({ from }, 'relayed publish to a topic that is not a provider topic refused');
      return;
    }
    await local.publish(body.topic, body.payload, body.retain ? { retain: true } : undefined);
  });
}
