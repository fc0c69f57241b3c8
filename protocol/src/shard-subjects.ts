/**
 * The NATS subjects between TRE shards (issue 21): the only names that cross the engine in clear,
 * apart from sizes and timing. None carries a household, meter, account or bid: the sealed body does.
 *   tre.shard.<to>.from.<from>   a sealed message from one shard to another
 *   tre.hello.<shard>            attestation requests to a shard (request/reply, replies on its inbox prefix)
 *   _INBOX.<shard>.>             a shard's reply subjects (its client's `inboxPrefix`)
 *   tre.journal.<shard>          the shard's journal entries (encrypted), stream TRE_JOURNAL_<shard>
 *   $KV.tre-lease-<shard>.holder the shard's ownership lease (an instance id), bucket tre-lease-<shard>
 *   tre.handover.<shard>         a standby of the shard asks its primary for the shard key (request/reply,
 *                                both attested, the key sealed to the standby): only the shard's own TREs
 * A shard's NATS user may publish only what names it as the sender and subscribe only to what is
 * addressed to it (`shardPermissions`): it cannot read another shard's traffic or speak as it. Of
 * JetStream it may use its own journal stream and lease bucket only (append, read, follow), and
 * may not create, change or delete any stream (an admin makes them: `ensureShardStreams`).
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
  /** Where a standby TRE of the shard asks the shard's primary for the shard key. */
  handover: (shard: string) => `${ROOT}.handover.${checkShard(shard)}`,
  inboxPrefix: (shard: string) => `_INBOX.${checkShard(shard)}`,
  /** The subject of the shard's journal entries. */
  journal: (shard: string) => `${ROOT}.journal.${checkShard(shard)}`,
  /** The JetStream stream holding them. */
  journalStream: (shard: string) => `TRE_JOURNAL_${checkShard(shard)}`,
  /** The KV bucket of the shard's ownership lease (its stream is `KV_<bucket>`). */
  leaseBucket: (shard: string) => `tre-lease-${checkShard(shard)}`,
};

/** The sending shard of a message subject, or undefined when it is not one. */
export function senderOf(subject: string): string | undefined {
  const m = /^tre\.shard\.[^.]+\.from\.([^.]+)$/.exec(subject);
  return m?.[1];
}

/**
 * The JetStream API a shard needs on its own journal and lease, as found against nats-server
 * 2.9.10 with @nats-io/jetstream and @nats-io/kv 3.4: appending (a publish, its ack on the inbox),
 * the head and one entry (stream info, message get), following (an ordered consumer: create,
 * pull, info when heartbeats are missed, delete on reset; no acks), the lease (KV put, update and
 * delete are publishes on `$KV.<bucket>.<key>`; get is a direct get).
 */
function journalPermissions(shard: string): string[] {
  const stream = shardSubjects.journalStream(shard);
  const bucket = shardSubjects.leaseBucket(shard);
  return [
    shardSubjects.journal(shard),
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.*`,
    `$JS.API.CONSUMER.INFO.${stream}.*`,
    `$JS.API.CONSUMER.DELETE.${stream}.*`,
    `$KV.${bucket}.>`,
    `$JS.API.DIRECT.GET.KV_${bucket}.>`,
  ];
}

/** What a shard's NATS user may publish and subscribe to (nats-server `permissions`). */
export function shardPermissions(shard: string): { publish: string[]; subscribe: string[] } {
  return {
    publish: [
      `${ROOT}.shard.*.from.${checkShard(shard)}`,
      `${ROOT}.hello.*`,
      shardSubjects.handover(shard),
      ...journalPermissions(shard),
    ],
    subscribe: [
      shardSubjects.messagesTo(shard),
      shardSubjects.hello(shard),
      shardSubjects.handover(shard),
      `${shardSubjects.inboxPrefix(shard)}.>`,
    ],
  };
}
