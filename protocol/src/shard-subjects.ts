/**
 * The NATS subjects between TRE shards (issue 21): the only names that cross the engine in clear,
 * apart from sizes and timing. None carries a household, meter, account or bid: the sealed body does.
 *   tre.shard.<to>.from.<from>   a sealed message from one shard to another
 *   tre.hello.<shard>            attestation requests to a shard (request/reply, replies on its inbox prefix)
 *   _INBOX.<shard>.>             a shard's reply subjects (its client's `inboxPrefix`)
 * A shard's NATS user may publish only what names it as the sender and subscribe only to what is
 * addressed to it (`shardPermissions`): it cannot read another shard's traffic or speak as it.
 */
import { assertId } from './identity.js';

/** A shard's name is a TRE id without '.', the NATS token separator. */
export function checkShard(shard: string): string {
  assertId(shard, 'shard');
  if (shard.includes('.')) throw new TypeError(`shard ${JSON.stringify(shard)} may not contain '.'`);
  return shard;
}

const ROOT = 'tre';

export const shardSubjects = {
  message: (to: string, from: string) => `${ROOT}.shard.${checkShard(to)}.from.${checkShard(from)}`,
  /** Every message addressed to a shard. */
  messagesTo: (to: string) => `${ROOT}.shard.${checkShard(to)}.from.*`,
  hello: (shard: string) => `${ROOT}.hello.${checkShard(shard)}`,
  inboxPrefix: (shard: string) => `_INBOX.${checkShard(shard)}`,
};

/** The sending shard of a message subject, or undefined when it is not one. */
export function senderOf(subject: string): string | undefined {
  const m = /^tre\.shard\.[^.]+\.from\.([^.]+)$/.exec(subject);
  return m?.[1];
}

/** What a shard's NATS user may publish and subscribe to (nats-server `permissions`). */
export function shardPermissions(shard: string): { publish: string[]; subscribe: string[] } {
  return {
    publish: [`${ROOT}.shard.*.from.${checkShard(shard)}`, `${ROOT}.hello.*`],
    subscribe: [
      shardSubjects.messagesTo(shard),
      shardSubjects.hello(shard),
      `${shardSubjects.inboxPrefix(shard)}.>`,
    ],
  };
}
