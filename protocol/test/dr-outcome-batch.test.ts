/**
 * Batched DR outcomes as a household verifies them: one TRE-signed Merkle root per round, each
 * household's own leaf and inclusion proof. A tampered proof or leaf, another household's proof,
 * a root signed by another key, a leaf of another event or kind: each refused by name. The
 * attestation batch's Merkle code (same module) keeps working.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  checkDrOutcome,
  type DrOutcome,
  type DrOutcomeKind,
  type DrOutcomeNotice,
  type DrOutcomeRoot,
  DrOutcomeVerifier,
  drOutcomeLeaf,
  drOutcomeLeafHash,
  drOutcomeLeafJson,
  drOutcomeTree,
} from '../src/demand-response.js';
import { leafHash, merkleBatch, merkleRootFromProof } from '../src/merkle.js';
import { signContent } from '../src/signed-content.js';

const tre = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const salt = () => randomBytes(16).toString('base64url');

/** A signed round of `n` households h0..h(n-1) (h0 accepted), as the TRE sends it. */
async function round(eventId: string, kind: DrOutcomeKind = 'acceptance', n = 5, key = tre.privateKey) {
  const outcomes: DrOutcome[] = Array.from({ length: n }, (_, i) => ({
    v: 1,
    eventId,
    kind,
    meterId: `h${i}`,
    bidId: `bid-${i}-xxxxxx`,
    outcome:
      kind === 'acceptance'
        ? i === 0
          ? 'accepted'
          : 'not-accepted'
        : i === 0
          ? 'delivered'
          : 'not-delivered',
    ...(i === 0 ? { creditMicroMinor: -50_000 } : {}),
    salt: salt(),
  }));
  const tree = drOutcomeTree(outcomes);
  const root: DrOutcomeRoot = {
    v: 1,
    eventId,
    kind,
    root: tree.root,
    leafCount: tree.leafCount,
    issuedAt: '2026-07-01T08:00:00Z',
  };
  const jws = await signContent('drOutcome', root, key);
  const notices: DrOutcomeNotice[] = outcomes.map((outcome, i) => ({
    v: 1,
    outcome,
    proof: tree.proof(i),
    jws,
  }));
  return { root, notices };
}

const me = (meterId: string) => ({ meterId, treKey: tre.publicKey, treKeyId: 'tre' });

describe('batched DR outcomes: the household side', () => {
  it("every household's notice verifies, one root signature check for the whole round", async () => {
    for (const n of [1, 2, 3, 5, 8, 13]) {
      const { notices } = await round('e1', 'acceptance', n);
      const verifier = new DrOutcomeVerifier();
      for (const [i, notice] of notices.entries())
        expect(await verifier.verify(notice, me(`h${i}`))).toMatchObject({
          ok: true,
          outcome: { meterId: `h${i}`, eventId: 'e1' },
        });
      expect(verifier.stats.rootVerifications).toBe(1);
    }
  });

  it('a tampered proof is refused (sibling changed, index moved, sibling dropped or added, other tree size)', async () => {
    const { notices } = await round('e1', 'acceptance', 6);
    const n = notices[1]!;
    const flipped = n.proof.siblings[0]!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
    const variants: DrOutcomeNotice['proof'][] = [
      { ...n.proof, siblings: [flipped, ...n.proof.siblings.slice(1)] },
      { ...n.proof, leafIndex: 0 },
      { ...n.proof, leafIndex: 6 },
      { ...n.proof, siblings: n.proof.siblings.slice(1) },
      { ...n.proof, siblings: [...n.proof.siblings, n.proof.siblings[0]!] },
      { ...n.proof, leafCount: 7 },
    ];
    const verifier = new DrOutcomeVerifier();
    for (const proof of variants)
      expect(await verifier.verify({ ...n, proof }, me('h1'))).toMatchObject({
        ok: false,
        reason: 'BAD_PROOF',
      });
  });

  it('a tampered outcome is refused (accepted instead of not, another credit, another salt)', async () => {
    const { notices } = await round('e1');
    const n = notices[1]!;
    const verifier = new DrOutcomeVerifier();
    for (const outcome of [
      { ...n.outcome, outcome: 'accepted' as const },
      { ...n.outcome, creditMicroMinor: -1 },
      { ...n.outcome, salt: salt() },
    ])
      expect(await verifier.verify({ ...n, outcome }, me('h1'))).toMatchObject({
        ok: false,
        reason: 'BAD_PROOF',
      });
  });

  it("another household's proof is refused, relabelled or not", async () => {
    const { notices } = await round('e1');
    const verifier = new DrOutcomeVerifier();
    // h0's notice (accepted, with a credit) replayed to h1.
    expect(await verifier.verify(notices[0], me('h1'))).toMatchObject({
      ok: false,
      reason: 'OTHER_HOUSEHOLD',
    });
    const relabelled = { ...notices[0]!, outcome: { ...notices[0]!.outcome, meterId: 'h1' } };
    expect(await verifier.verify(relabelled, me('h1'))).toMatchObject({ ok: false, reason: 'BAD_PROOF' });
  });

  it('a root signed by another key is refused, and not cached', async () => {
    const forged = await round('e1', 'acceptance', 5, other.privateKey);
    const verifier = new DrOutcomeVerifier();
    const first = await verifier.verify(forged.notices[0], me('h0'));
    expect(first).toMatchObject({ ok: false, reason: 'BAD_ROOT_SIGNATURE' });
    expect(await verifier.verify(forged.notices[0], me('h0'))).toMatchObject({
      reason: 'BAD_ROOT_SIGNATURE',
    });
    expect(verifier.stats.rootVerifications).toBe(2);
    // Signed by the TRE but under another type (a signed announcement is not an outcome root).
    const { notices, root } = await round('e1');
    const wrongType = await signContent('drAnnouncement', root, tre.privateKey);
    expect(await verifier.verify({ ...notices[0]!, jws: wrongType }, me('h0'))).toMatchObject({
      ok: false,
      reason: 'BAD_ROOT_SIGNATURE',
    });
  });

  it('a leaf of another event or kind is refused under this round', async () => {
    const e1 = await round('e1');
    const e2 = await round('e2');
    const verifier = new DrOutcomeVerifier();
    // e2's leaf and proof with e1's signed root.
    expect(await verifier.verify({ ...e2.notices[0]!, jws: e1.notices[0]!.jws }, me('h0'))).toMatchObject({
      ok: false,
      reason: 'OTHER_ROUND',
    });
    // e1's leaf renamed to e2 with e2's root.
    const renamed = {
      ...e1.notices[0]!,
      outcome: { ...e1.notices[0]!.outcome, eventId: 'e2' },
      jws: e2.notices[0]!.jws,
    };
    expect(await verifier.verify(renamed, me('h0'))).toMatchObject({ ok: false, reason: 'BAD_PROOF' });
    // An acceptance leaf under the same event's settlement root.
    const settled = await round('e1', 'settlement');
    expect(
      await verifier.verify({ ...e1.notices[0]!, jws: settled.notices[0]!.jws }, me('h0')),
    ).toMatchObject({
      ok: false,
      reason: 'OTHER_ROUND',
    });
    expect(checkDrOutcome(e2.notices[0]!, e1.root, 'h0')).toMatchObject({ reason: 'OTHER_ROUND' });
    expect(checkDrOutcome(e1.notices[0]!, e1.root, 'h0')).toBeUndefined();
  });

  it('malformed notices are refused: unknown fields, an outcome of the wrong kind, no salt', async () => {
    const { notices } = await round('e1');
    const n = notices[0]!;
    const verifier = new DrOutcomeVerifier();
    for (const bad of [
      undefined,
      { ...n, extra: 1 },
      { ...n, outcome: { ...n.outcome, outcome: 'delivered' } },
      { ...n, outcome: { ...n.outcome, salt: undefined } },
      { ...n, outcome: { ...n.outcome, salt: 'short' } },
      { ...n, proof: { ...n.proof, siblings: ['not-a-hash'] } },
    ])
      expect(await verifier.verify(bad, me('h0'))).toMatchObject({ ok: false, reason: 'MALFORMED' });
  });

  it('refusal messages never name a household or bid', async () => {
    const e1 = await round('e1');
    const forged = await round('e1', 'acceptance', 5, other.privateKey);
    const verifier = new DrOutcomeVerifier();
    const messages = await Promise.all(
      [
        verifier.verify(e1.notices[0], me('h1')),
        verifier.verify(
          { ...e1.notices[1]!, outcome: { ...e1.notices[1]!.outcome, outcome: 'accepted' } },
          me('h1'),
        ),
        verifier.verify(forged.notices[1], me('h1')),
        verifier.verify(
          { ...e1.notices[1]!, outcome: { ...e1.notices[1]!.outcome, eventId: 'e9' } },
          me('h1'),
        ),
      ].map(async (p) => {
        const r = await p;
        return r.ok ? '' : r.message;
      }),
    );
    for (const m of messages) {
      expect(m).not.toBe('');
      expect(m).not.toMatch(/h0|h1|bid-/);
    }
  });

  it('the leaf is canonical JSON (sorted keys, absent credit absent) and salted', () => {
    const o: DrOutcome = {
      salt: 'A'.repeat(22),
      v: 1,
      outcome: 'not-accepted',
      meterId: 'h1',
      kind: 'acceptance',
      eventId: 'e1',
      bidId: 'bid-1-xxxxxx',
    };
    expect(drOutcomeLeaf(o).toString()).toBe(
      `{"bidId":"bid-1-xxxxxx","eventId":"e1","kind":"acceptance","meterId":"h1","outcome":"not-accepted","salt":"${'A'.repeat(22)}","v":1}`,
    );
    expect(drOutcomeLeaf({ ...o, creditMicroMinor: undefined })).toEqual(drOutcomeLeaf(o));
    expect(drOutcomeLeafHash({ ...o, salt: 'B'.repeat(22) })).not.toEqual(drOutcomeLeafHash(o));
    expect(drOutcomeLeafHash(o)).toEqual(leafHash(drOutcomeLeaf(o)));
  });

  it('the verified-root cache is bounded', async () => {
    const verifier = new DrOutcomeVerifier(2);
    const rounds = await Promise.all(['e1', 'e2', 'e3'].map((e) => round(e, 'acceptance', 2)));
    for (const r of rounds) await verifier.verify(r.notices[0], me('h0'));
    await verifier.verify(rounds[2]!.notices[1], me('h1')); // cached
    expect(verifier.stats.rootVerifications).toBe(3);
    await verifier.verify(rounds[0]!.notices[1], me('h1')); // evicted: verified again
    expect(verifier.stats.rootVerifications).toBe(4);
  });
});

describe('merkle: the attestation batch still works', () => {
  it('every nonce of batches of 1..17 proves to the root; a proof out of the tree is refused', () => {
    for (let n = 1; n <= 17; n++) {
      const nonces = Array.from({ length: n }, () => randomBytes(32));
      const { root, proofs } = merkleBatch(nonces);
      nonces.forEach((nonce, i) => {
        expect(merkleRootFromProof(nonce, proofs[i]!)).toEqual(root);
      });
      expect(() => merkleRootFromProof(nonces[0]!, { ...proofs[0]!, leafIndex: n })).toThrow(RangeError);
    }
    expect(() => merkleBatch([])).toThrow(RangeError);
  });
});

describe('batched DR outcomes: the TRE side', () => {
  it("each notice's JSON text is the notice, and its leaf text is the sorted-key JSON", async () => {
    const { notices } = await round('e1', 'acceptance', 7);
    const tree = drOutcomeTree(notices.map((n) => n.outcome));
    const sorted = (o: object) =>
      JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
    notices.forEach((n, i) => {
      expect(drOutcomeLeafJson(n.outcome)).toBe(sorted(n.outcome));
      expect(JSON.parse(tree.notice(i, n.jws))).toEqual({ ...n, proof: tree.proof(i) });
      expect(tree.notice(i, n.jws)).toBe(
        JSON.stringify({
          v: 1,
          outcome: JSON.parse(drOutcomeLeafJson(n.outcome)),
          proof: tree.proof(i),
          jws: n.jws,
        }),
      );
    });
    expect(drOutcomeTree([notices[0]!.outcome]).notice(0, 'x')).toContain('"siblings":[]');
  });
});
