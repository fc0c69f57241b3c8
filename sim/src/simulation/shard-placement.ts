/**
 * Where the simulation puts things in a cluster of TRE shards (issue 21), as pure rules.
 * Households: contiguous blocks by index. The DNO's feeders are consecutive blocks of households
 * too, so most feeders live in one shard and a feeder spans two exactly where a shard's block ends
 * inside it (36 households, 3 shards, feeders of 9: feeders 1 and 4 are local, 2 and 3 span two).
 * Parties: regulator s1, DNO s2, supplier s3, DSM s1 (modulo the shard count), so registry,
 * groups, tariff and events each arrive at a different shard and are replicated, and what goes to
 * the DNO and the supplier is mostly relayed by another shard.
 */

/** The shards' names: s1..sN. */
export function shardNames(count: number): string[] {
  if (!Number.isInteger(count) || count < 1)
    throw new TypeError(`shards must be a positive integer, got ${count}`);
  return Array.from({ length: count }, (_, i) => `s${i + 1}`);
}

/** The shard (index) of household `index` of `households`: contiguous blocks of about equal size. */
export function shardOfHousehold(index: number, households: number, shards: number): number {
  return Math.min(shards - 1, Math.floor((index * shards) / households));
}

/** Where each grid party connects, as an index into the shards before `% shards`. */
const PARTY_SHARD = { regulator: 0, dno: 1, supplier: 2, dsm: 0 } as const;

export type GridParty = keyof typeof PARTY_SHARD;

/** The shard (index) a grid party connects to. */
export function shardOfParty(party: GridParty, shards: number): number {
  return PARTY_SHARD[party] % shards;
}
