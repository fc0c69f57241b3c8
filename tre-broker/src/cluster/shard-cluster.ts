/**
 * What a flow sees of the other shards (issue 21): its own shard's name, where a household lives
 * (the regulator's registry), and sealed messages to and from other attested shards. NATS carries
 * them; it sees subjects, sizes and ciphertext only (shard-link.ts seals each to the receiving
 * shard's attested key and signs it with the sender's TLS key; the receiver signs its answer).
 *
 * A flow without a cluster (a single TRE) gets `undefined` and behaves as before.
 */

/** A message kind between shards, e.g. `monitoring.partial`, `dr.batch` (one handler per kind). */
export type ShardMessageKind = `${string}.${string}`;

export type ShardMessageHandler = (from: string, body: unknown) => Promise<void>;

export interface ShardCluster {
  /** This shard's name (its TRE certificate's `urn:tre:tre:<shard>`). */
  readonly shard: string;
  /** Every shard of the cluster (the deployment's roster, `tre start --shards`), sorted, this one included. */
  readonly shards: readonly string[];
  /** The shard a registered household lives in (the registry's assignment), if registered. */
  shardOf(meterId: string): string | undefined;
  /** Every shard holding at least one registered household, sorted (this one only if it holds one). */
  shardsWithHouseholds(): string[];
  /**
   * Sends a sealed message to another shard and resolves once that shard handled it: its handler
   * ran, or had already run for this message. Unanswered tries (the shard down, restarting,
   * failing over to a standby, a NATS node lost) are retried with the same message id until a
   * deadline (60 s), so a running receiver handles each message once. Rejects (ShardLinkError)
   * with PEER_UNTRUSTED, PEER_UNREACHABLE (never attested: nothing sent) or NOT_DELIVERED (not
   * acknowledged by the deadline: it may or may not have been handled), REFUSED (the receiver
   * refused it, e.g. no handler), HANDLER_FAILED (its handler threw: not retried, handlers
   * validate their bodies; a handler throwing a `code` 'STORAGE_UNAVAILABLE' error is retried).
   * At least once, not exactly once: a receiver that failed over does not know the ids the old
   * primary handled, so a message whose answer was lost is handled again by the new primary;
   * handlers must tolerate a repeat.
   * Sending to this shard's own name runs its handler in process and resolves once it ran
   * (HANDLER_FAILED when it threw; no retries).
   */
  send(to: string, kind: ShardMessageKind, body: unknown): Promise<void>;
  /** Registers the handler of a kind (one per kind); `from` is the sending shard, authenticated. */
  on(kind: ShardMessageKind, handler: ShardMessageHandler): void;
}
