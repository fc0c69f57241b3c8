/** Payloads of the demand-response flow (paper III-C): anonymous demand bidding. */
import { z } from 'zod';
import { instant, partyId, pricePerMWh, requestId, safeInt, version } from './envelope.js';
import { leafHash, MAX_LEAVES, merkleLevels, merkleRootFromLeafHash, proofOf } from './merkle.js';
import { describeIssues, type VerifyingKey, verifyContent } from './signed-content.js';
import { PROTOCOL_VERSION } from './version.js';

/** Signed by the DSM (JWS payload) on `dsm/{x}/event`; re-signed by the TRE for the broadcast. */
export const drEventSchema = z.strictObject({
  v: version,
  eventId: partyId,
  dsmId: partyId,
  windowStart: instant,
  windowEnd: instant,
  bidDeadline: instant,
  /**
   * The DSM's acceptance must arrive before this instant: after bidDeadline, no later than
   * windowStart (so households learn their outcome before the window). Later ones are refused.
   */
  acceptBy: instant,
  requestedReductionWh: z.number().int().min(1).max(1_000_000_000_000),
  priceCapPerMWh: pricePerMWh,
  targetGroup: z.strictObject({ dnoId: partyId, groupId: partyId }).optional(),
});
export type DrEvent = z.infer<typeof drEventSchema>;

/**
 * TRE-signed broadcast of an event on `broadcast/dr-event/{e}` (retained until expiresAt): the open
 * event, each modification of it (`revision` 1, 2, ...: bids on an earlier revision are void, and
 * agents decide again against the new terms) and its cancellation (`cancelled`, with the terms of
 * the revision cancelled: every bid is void, an accepted shed is off, its credit reversed).
 */
export const drAnnouncementSchema = z.strictObject({
  v: version,
  event: drEventSchema,
  expiresAt: instant,
  /** 0 (or absent) for the event as first raised, then one more per modification. */
  revision: z.number().int().min(0).max(1_000).optional(),
  cancelled: z.literal(true).optional(),
});
export type DrAnnouncement = z.infer<typeof drAnnouncementSchema>;

/** The terms a DSM's modification may change (at least one); the others stay as they were. */
export const drTermsSchema = drEventSchema
  .pick({
    windowStart: true,
    windowEnd: true,
    bidDeadline: true,
    acceptBy: true,
    requestedReductionWh: true,
    priceCapPerMWh: true,
  })
  .partial()
  .refine((t) => Object.keys(t).length > 0, { message: 'a modification changes at least one term' });
export type DrTerms = z.infer<typeof drTermsSchema>;

/**
 * Signed by the DSM (JWS typ `tre-dr-cancel+jws`) inside the signed envelope on
 * `dsm/{x}/cancel/{e}`: names the event (the topic's) and the DSM (the signer and the event's
 * owner). `issuedAt` orders the DSM's changes of an event: one not later than the last applied is
 * a replay (`REPLAYED`); an identical resend of the last one is a duplicate.
 */
export const drCancelSchema = z.strictObject({
  v: version,
  eventId: partyId,
  dsmId: partyId,
  issuedAt: instant,
});
export type DrCancel = z.infer<typeof drCancelSchema>;

/**
 * Signed by the DSM (JWS typ `tre-dr-modify+jws`) on `dsm/{x}/modify/{e}`: new terms for its
 * event, checked as a new event would be (so the bid deadline is in the future: a modification
 * opens bidding again). Ordered and replay-checked by `issuedAt` like a cancellation.
 */
export const drModifySchema = z.strictObject({
  v: version,
  eventId: partyId,
  dsmId: partyId,
  issuedAt: instant,
  terms: drTermsSchema,
});
export type DrModify = z.infer<typeof drModifySchema>;

/**
 * meter -> TRE on `meter/{m}/override` (authenticated by the household's certificate): the
 * household takes back its accepted shed of `eventId` (its loads are on again). The bid settles as
 * not delivered: its whole credit is reversed (the event's terms carry no penalty).
 */
export const drOverrideSchema = z.strictObject({
  v: version,
  requestId,
  eventId: partyId,
  bidId: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
});
export type DrOverride = z.infer<typeof drOverrideSchema>;

/** meter -> TRE on `meter/{m}/bid`. Idempotency key: bidId. */
export const bidSchema = z.strictObject({
  v: version,
  requestId,
  bidId: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
  eventId: partyId,
  quantityWh: safeInt,
  pricePerMWh: safeInt,
});
export type Bid = z.infer<typeof bidSchema>;

/** A random single-use pseudonym: 128 bits or more, base64url. */
export const pseudonym = z.string().regex(/^[A-Za-z0-9_-]{22,64}$/);

/** TRE -> DSM on `dsm/{x}/bids/{e}`: all pseudo-bids at once, in random order, nothing else. */
export const pseudoBidsSchema = z.strictObject({
  v: version,
  eventId: partyId,
  bids: z.array(z.strictObject({ pseudonym, quantityWh: safeInt, pricePerMWh: safeInt })),
});
export type PseudoBids = z.infer<typeof pseudoBidsSchema>;

/**
 * Signed by the DSM (JWS payload, typ `tre-dr-acceptance+jws`) inside the signed envelope on
 * `dsm/{x}/accept/{e}`: names the event (must be the topic's) and the DSM (must be the signer and
 * the event's owner). One per event, before the event's `acceptBy`.
 */
export const acceptanceSchema = z.strictObject({
  v: version,
  eventId: partyId,
  dsmId: partyId,
  accepted: z.array(pseudonym).max(1_000_000),
});
export type Acceptance = z.infer<typeof acceptanceSchema>;

/** TRE -> DSM on `dsm/{x}/compliance/{e}`: per pseudonym, delivered or not; never readings. */
export const complianceSchema = z.strictObject({
  v: version,
  eventId: partyId,
  results: z.array(z.strictObject({ pseudonym, delivered: z.boolean() })),
});
export type Compliance = z.infer<typeof complianceSchema>;

/*
 * Household outcomes, one TRE signature per round. When the DSM's acceptance is recorded (kind
 * `acceptance`) and when the event is settled (kind `settlement`), the TRE builds a Merkle tree
 * (merkle.ts) over one leaf per household, signs its root once (`drOutcomeRootSchema`, JWS typ
 * `tre-dr-outcome+jws`) and sends each household its own leaf, its inclusion proof and the signed
 * root (`drOutcomeNoticeSchema`) on its `inbox/dr-outcome`. The leaf names the event, the kind,
 * the household's meter and bid, so a proof cannot be replayed to another household, event or kind;
 * it carries 128 random bits (`salt`) of the TRE, so the sibling hashes a household receives cannot
 * be brute-forced from the small space of outcomes, credits and meter ids.
 */

const bidIdSchema = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/);
/** A SHA-256 hash, base64url without padding. */
const hash256 = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'a SHA-256 hash, base64url (43 characters)');

/**
 * `cancellation`: the DSM cancelled or modified an event after accepting bids; each accepted
 * household's outcome is `cancelled`, its credit the compensating ledger line (what it gives back).
 */
export const DR_OUTCOME_KINDS = ['acceptance', 'settlement', 'cancellation'] as const;
export type DrOutcomeKind = (typeof DR_OUTCOME_KINDS)[number];
/** Which outcomes each kind of round has. */
export const OUTCOMES_OF_KIND = {
  acceptance: ['accepted', 'not-accepted'],
  settlement: ['delivered', 'not-delivered'],
  cancellation: ['cancelled'],
} as const satisfies Record<DrOutcomeKind, readonly string[]>;

/** One household's outcome in a round: the Merkle leaf (its canonical bytes: `drOutcomeLeaf`). */
export const drOutcomeSchema = z
  .strictObject({
    v: version,
    eventId: partyId,
    kind: z.enum(DR_OUTCOME_KINDS),
    /** The household the outcome is for (its certificate identity's id). */
    meterId: partyId,
    bidId: bidIdSchema,
    outcome: z.enum(['accepted', 'not-accepted', 'delivered', 'not-delivered', 'cancelled']),
    /** Credit (negative ledger line) or its reversal, micro-minor units. */
    creditMicroMinor: safeInt.optional(),
    /** 128 random bits or more, base64url, fresh per leaf: hides the leaf from its siblings. */
    salt: z.string().regex(/^[A-Za-z0-9_-]{22,64}$/),
  })
  .refine((o) => (OUTCOMES_OF_KIND[o.kind] as readonly string[]).includes(o.outcome), {
    path: ['outcome'],
    message: 'this outcome does not belong to this kind of round',
  });
export type DrOutcome = z.infer<typeof drOutcomeSchema>;

/** Signed once per round by the TRE (JWS payload, typ `tre-dr-outcome+jws`). */
export const drOutcomeRootSchema = z.strictObject({
  v: version,
  eventId: partyId,
  kind: z.enum(DR_OUTCOME_KINDS),
  /** Root of the Merkle tree over the round's leaves, base64url. */
  root: hash256,
  leafCount: z.number().int().min(1).max(MAX_LEAVES),
  issuedAt: instant,
});
export type DrOutcomeRoot = z.infer<typeof drOutcomeRootSchema>;

export const drOutcomeProofSchema = z.strictObject({
  leafIndex: z
    .number()
    .int()
    .min(0)
    .max(MAX_LEAVES - 1),
  leafCount: z.number().int().min(1).max(MAX_LEAVES),
  /** Bottom-up, base64url; at most one per level of a tree of MAX_LEAVES leaves. */
  siblings: z.array(hash256).max(31),
});
export type DrOutcomeProof = z.infer<typeof drOutcomeProofSchema>;

/** TRE -> household on `inbox/dr-outcome`: its outcome, its inclusion proof, the signed root. */
export const drOutcomeNoticeSchema = z.strictObject({
  v: version,
  outcome: drOutcomeSchema,
  proof: drOutcomeProofSchema,
  /** The TRE-signed `drOutcomeRootSchema` of the round (compact JWS). */
  jws: z.string().min(1).max(4_096),
});
export type DrOutcomeNotice = z.infer<typeof drOutcomeNoticeSchema>;

/**
 * The canonical text of a leaf: JSON of the outcome with its keys sorted and no whitespace (every
 * value is a string or a safe integer, for which JSON.stringify is canonical); an absent credit is
 * absent, never null. Written out key by key (the schema is strict, so these are all its keys): a
 * round hashes one per household.
 */
export function drOutcomeLeafJson(o: DrOutcome): string {
  const j = JSON.stringify;
  const credit = o.creditMicroMinor === undefined ? '' : `"creditMicroMinor":${j(o.creditMicroMinor)},`;
  return `{"bidId":${j(o.bidId)},${credit}"eventId":${j(o.eventId)},"kind":${j(o.kind)},"meterId":${j(o.meterId)},"outcome":${j(o.outcome)},"salt":${j(o.salt)},"v":${j(o.v)}}`;
}

/** The canonical bytes of a leaf (UTF-8 of `drOutcomeLeafJson`). */
export const drOutcomeLeaf = (o: DrOutcome): Buffer => Buffer.from(drOutcomeLeafJson(o), 'utf8');

export const drOutcomeLeafHash = (o: DrOutcome): Buffer => leafHash(drOutcomeLeafJson(o));

/**
 * The TRE's side: the tree over a round's outcomes (all of one event and kind, in the order
 * given), its root (base64url), each leaf's proof, and each household's notice as JSON text
 * (`drOutcomeNoticeSchema`), built on demand from nodes encoded once.
 */
export function drOutcomeTree(outcomes: readonly DrOutcome[]): {
  root: string;
  leafCount: number;
  proof(leafIndex: number): DrOutcomeProof;
  /** The notice of leaf `leafIndex` under the signed root `jws`, as JSON text. */
  notice(leafIndex: number, jws: string): string;
} {
  const leaves = outcomes.map(drOutcomeLeafJson);
  const levels = merkleLevels(leaves.map(leafHash)).map((level) =>
    level.map((node) => node.toString('base64url')),
  );
  const leafCount = outcomes.length;
  const proof = (leafIndex: number): DrOutcomeProof => ({
    leafIndex,
    leafCount,
    siblings: proofOf(levels, leafIndex),
  });
  return {
    root: levels.at(-1)![0]!,
    leafCount,
    proof,
    notice: (leafIndex, jws) => {
      // What JSON.stringify of the notice gives, with the leaf's canonical text reused (hashes are
      // base64url: nothing to escape).
      const siblings = proofOf(levels, leafIndex);
      const list = siblings.length ? `["${siblings.join('","')}"]` : '[]';
      return `{"v":${PROTOCOL_VERSION},"outcome":${leaves[leafIndex]!},"proof":{"leafIndex":${leafIndex},"leafCount":${leafCount},"siblings":${list}},"jws":${JSON.stringify(jws)}}`;
    },
  };
}

/** Why a household refuses an outcome notice (its texts never name a household). */
export type DrOutcomeRefusal =
  | 'MALFORMED'
  | 'BAD_ROOT_SIGNATURE'
  | 'OTHER_HOUSEHOLD'
  | 'OTHER_ROUND'
  | 'BAD_PROOF';

export type DrOutcomeCheck =
  | { ok: true; outcome: DrOutcome; root: DrOutcomeRoot }
  | { ok: false; reason: DrOutcomeRefusal; message: string };

/**
 * Pure: whether a notice's outcome, under a root whose signature has been verified, is this
 * household's (`meterId`) and is in the signed tree. The leaf must name this household, and the
 * event and kind the root was signed for; the proof must have the signed leaf count and lead from
 * the leaf to the signed root.
 */
export function checkDrOutcome(
  notice: Pick<DrOutcomeNotice, 'outcome' | 'proof'>,
  root: DrOutcomeRoot,
  meterId: string,
): { reason: DrOutcomeRefusal; message: string } | undefined {
  const { outcome, proof } = notice;
  if (outcome.meterId !== meterId)
    return { reason: 'OTHER_HOUSEHOLD', message: 'the outcome names another household' };
  if (outcome.eventId !== root.eventId || outcome.kind !== root.kind)
    return {
      reason: 'OTHER_ROUND',
      message: `the outcome is not for the round its root was signed for (${root.kind} of event ${root.eventId})`,
    };
  if (proof.leafCount !== root.leafCount)
    return { reason: 'BAD_PROOF', message: 'the proof is for a tree of another size than the signed one' };
  let proven: Buffer;
  try {
    proven = merkleRootFromLeafHash(drOutcomeLeafHash(outcome), {
      leafIndex: proof.leafIndex,
      leafCount: proof.leafCount,
      siblings: proof.siblings.map((s) => Buffer.from(s, 'base64url')),
    });
  } catch (err) {
    return { reason: 'BAD_PROOF', message: (err as Error).message };
  }
  if (proven.toString('base64url') !== root.root)
    return { reason: 'BAD_PROOF', message: 'the outcome and its proof do not lead to the signed root' };
  return undefined;
}

/**
 * The household's side: parses a notice, verifies the root's signature with the TRE's key (once
 * per TRE key and signed root: the verified roots are cached, the most recent `maxRoots`), then
 * `checkDrOutcome`.
 */
export class DrOutcomeVerifier {
  private readonly roots = new Map<string, Promise<DrOutcomeRoot>>();
  /** Signature verifications actually run (the others were served by the cache). */
  readonly stats = { rootVerifications: 0 };

  constructor(private readonly maxRoots = 100) {}

  async verify(
    notice: unknown,
    me: { meterId: string; treKey: VerifyingKey; treKeyId: string },
  ): Promise<DrOutcomeCheck> {
    const parsed = drOutcomeNoticeSchema.safeParse(notice);
    if (!parsed.success) return { ok: false, reason: 'MALFORMED', message: describeIssues(parsed.error) };
    let root: DrOutcomeRoot;
    try {
      root = await this.root(parsed.data.jws, me.treKey, me.treKeyId);
    } catch (err) {
      return { ok: false, reason: 'BAD_ROOT_SIGNATURE', message: (err as Error).message };
    }
    const refused = checkDrOutcome(parsed.data, root, me.meterId);
    return refused ? { ok: false, ...refused } : { ok: true, outcome: parsed.data.outcome, root };
  }

  private root(jws: string, treKey: VerifyingKey, treKeyId: string): Promise<DrOutcomeRoot> {
    const key = `${treKeyId}\n${jws}`;
    const cached = this.roots.get(key);
    if (cached) return cached;
    this.stats.rootVerifications++;
    const verified = verifyContent('drOutcome', jws, treKey, drOutcomeRootSchema);
    this.roots.set(key, verified);
    verified.catch(() => this.roots.delete(key)); // a failure is not remembered
    for (const old of this.roots.keys()) {
      if (this.roots.size <= this.maxRoots) break;
      this.roots.delete(old);
    }
    return verified;
  }
}
