/**
 * Merkle trees: one TPM quote answers many attestation requests (the leaves are nonces), and one
 * TRE signature covers a demand-response round's household outcomes (the leaves are canonical
 * outcome bytes, demand-response.ts). Leaves are SHA-256(0x00 || leaf bytes), inner nodes
 * SHA-256(0x01 || left || right) (domain-separated, as in RFC 6962, so a leaf can never pass as a
 * node); an odd node at the end of a level is promoted.
 */
import * as nodeCrypto from 'node:crypto';

/** SHA-256 of bytes, or of a string's UTF-8 (one-shot `crypto.hash` where Node has it: >= 20.12). */
const digest: (data: Buffer | string) => Buffer =
  typeof nodeCrypto.hash === 'function'
    ? (data) => nodeCrypto.hash('sha256', data, 'buffer')
    : (data) => nodeCrypto.createHash('sha256').update(data).digest();
const sha256 = (...parts: Buffer[]) => digest(Buffer.concat(parts));

const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

/** The hash of one leaf: any bytes (a nonce), or a string as its UTF-8 (a canonical outcome). */
export const leafHash = (leaf: Buffer | string): Buffer =>
  typeof leaf === 'string' ? digest(`\u0000${leaf}`) : sha256(LEAF, leaf);
const nodeHash = (l: Buffer, r: Buffer) => sha256(NODE, l, r);

export interface InclusionProof {
  leafIndex: number;
  leafCount: number;
  siblings: Buffer[];
}

/** Largest tree: leaf positions stay within 32-bit integer arithmetic. */
export const MAX_LEAVES = 0x7fff_ffff;

/**
 * Every level of the tree over already-hashed leaves, from the leaf hashes (level 0) to the root
 * (the last level, one node). Proofs are read off the levels with `proofOf`, so a caller with many
 * leaves can encode each node once and build proofs lazily.
 */
export function merkleLevels(leafHashes: Buffer[]): Buffer[][] {
  if (leafHashes.length === 0) throw new RangeError('a tree needs at least one leaf');
  if (leafHashes.length > MAX_LEAVES) throw new RangeError('too many leaves');
  const levels: Buffer[][] = [leafHashes];
  let level = leafHashes;
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i < level.length; i += 2)
      next.push(i + 1 < level.length ? nodeHash(level[i]!, level[i + 1]!) : level[i]!);
    levels.push(next);
    level = next;
  }
  return levels;
}

/** The siblings of leaf `leafIndex`, bottom-up, as `merkleRootFromProof` consumes them. */
export function proofOf<T>(levels: T[][], leafIndex: number): T[] {
  const siblings: T[] = [];
  let pos = leafIndex;
  for (let l = 0; l < levels.length - 1; l++) {
    const sibling = levels[l]![pos ^ 1];
    if (sibling !== undefined) siblings.push(sibling);
    pos >>= 1;
  }
  return siblings;
}

/** Builds the tree over the leaves (e.g. nonces); returns the root and one inclusion proof per leaf. */
export function merkleBatch(leaves: Buffer[]): { root: Buffer; proofs: InclusionProof[] } {
  if (leaves.length === 0) throw new RangeError('a batch needs at least one nonce');
  const levels = merkleLevels(leaves.map(leafHash));
  return {
    root: levels.at(-1)![0]!,
    proofs: leaves.map((_, i) => ({
      leafIndex: i,
      leafCount: leaves.length,
      siblings: proofOf(levels, i),
    })),
  };
}

/** Recomputes the root from a leaf (e.g. a nonce) and its proof; throws RangeError on a malformed proof. */
export function merkleRootFromProof(leaf: Buffer, proof: InclusionProof): Buffer {
  return merkleRootFromLeafHash(leafHash(leaf), proof);
}

/** Recomputes the root from a leaf's hash and its proof; throws RangeError on a malformed proof. */
export function merkleRootFromLeafHash(leaf: Buffer, proof: InclusionProof): Buffer {
  const { leafIndex, leafCount } = proof;
  if (!Number.isInteger(leafCount) || leafCount < 1 || leafCount > MAX_LEAVES)
    throw new RangeError('inclusion proof: bad leaf count');
  if (!Number.isInteger(leafIndex) || leafIndex < 0 || leafIndex >= leafCount)
    throw new RangeError('inclusion proof: leaf index outside the tree');
  let hash = leaf;
  let pos = leafIndex;
  let width = leafCount;
  let s = 0;
  while (width > 1) {
    const sibling = pos ^ 1;
    if (sibling < width) {
      const other = proof.siblings[s++];
      if (!other) throw new RangeError('inclusion proof too short');
      hash = pos & 1 ? nodeHash(other, hash) : nodeHash(hash, other);
    }
    pos >>= 1;
    width = Math.ceil(width / 2);
  }
  if (s !== proof.siblings.length) throw new RangeError('inclusion proof too long');
  return hash;
}

/** The quote's qualifying data: binds the batch root to the TRE's TLS key. */
export function qualifyingData(root: Buffer, tlsKeyHash: Buffer): Buffer {
  return sha256(root, tlsKeyHash);
}
