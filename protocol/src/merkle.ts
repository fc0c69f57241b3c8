/**
 * The Merkle tree that lets one TPM quote answer many attestation requests. Leaves are
 * SHA-256(0x00 || nonce), inner nodes SHA-256(0x01 || left || right) (domain-separated, as in
 * RFC 6962, so a leaf can never pass as a node); an odd node at the end of a level is promoted.
 */
import { createHash } from 'node:crypto';

const sha256 = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();

export const leafHash = (nonce: Buffer) => sha256(Buffer.from([0]), nonce);
const nodeHash = (l: Buffer, r: Buffer) => sha256(Buffer.from([1]), l, r);

export interface InclusionProof {
  leafIndex: number;
  leafCount: number;
  siblings: Buffer[];
}

/** Builds the tree over the nonces; returns the root and one inclusion proof per nonce. */
export function merkleBatch(nonces: Buffer[]): { root: Buffer; proofs: InclusionProof[] } {
  if (nonces.length === 0) throw new RangeError('a batch needs at least one nonce');
  let level: Buffer[] = nonces.map(leafHash);
  const proofs: InclusionProof[] = nonces.map((_, i) => ({
    leafIndex: i,
    leafCount: nonces.length,
    siblings: [],
  }));
  let positions = nonces.map((_, i) => i);
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i < level.length; i += 2)
      next.push(i + 1 < level.length ? nodeHash(level[i]!, level[i + 1]!) : level[i]!);
    positions = positions.map((pos, leaf) => {
      const sibling = pos ^ 1;
      if (sibling < level.length) proofs[leaf]!.siblings.push(level[sibling]!);
      return pos >> 1;
    });
    level = next;
  }
  return { root: level[0]!, proofs };
}

/** Recomputes the root from a nonce and its proof. */
export function merkleRootFromProof(nonce: Buffer, proof: InclusionProof): Buffer {
  let hash = leafHash(nonce);
  let pos = proof.leafIndex;
  let width = proof.leafCount;
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
