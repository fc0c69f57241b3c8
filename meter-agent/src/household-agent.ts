/**
 * The household agent: the meter's intervals go to the TRE through the durable outbox; TRE-signed
 * broadcasts and inbox messages are verified with the TRE's certificate key (from the attested
 * connection) before they count (a DR outcome by its inclusion proof under the round's TRE-signed
 * Merkle root); DR events go to the household policy; accepted bids shed loads for their window.
 * The DSM may modify an event (the TRE announces the next revision: bids on the earlier one are
 * void and the policy decides again) or cancel it (every bid void; an accepted shed is off at once);
 * the household may override an accepted shed (`override`: its loads are on at once, the TRE is
 * told on the household's own `override` topic and settles the bid as not delivered).
 * Everything the agent knows is kept in `status.json` for `meter-agent status`.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IntervalRecord } from '@tre/hardware';
import {
  type Bill,
  billSchema,
  type Clock,
  type DrAnnouncement,
  type DrOutcome,
  type DrOutcomeRefusal,
  DrOutcomeVerifier,
  drAnnouncementSchema,
  type HouseholdStatement,
  householdStatementSchema,
  PendingTimers,
  PROTOCOL_VERSION,
  parseTopic,
  signedEnvelopeSchema,
  type Tariff,
  tariffSchema,
  topics,
  verifyContent,
} from '@tre/protocol';
import { z } from 'zod';
import type { LinkState, TreLink } from './tre-link.js';
import { AGENT_VERSION } from './version.js';

/** What the household policy proposes for an event (from hems-policy). */
export type BidProposal =
  | {
      bid: {
        quantityWh: number;
        pricePerMWh: number;
        loads: { name: string; actuator: string; from: string; to: string }[];
      };
    }
  | { reason: string };

/** A bid of this household that counts against its policy's daily limit (see `committedBids`). */
export interface CommittedBid {
  windowStart: string;
  quantityWh: number;
}

export interface HouseholdAgentOptions {
  link: TreLink;
  clock: Clock;
  stateDir: string;
  mode: 'auto-bid' | 'ask-first' | 'never';
  /** The household policy's proposal for `event`, given the bids that count against its daily limit. */
  propose?: (event: DrAnnouncement['event'], committed: readonly CommittedBid[]) => BidProposal;
  /**
   * Proposals of a previous run (`previousProposals(stateDir)`): after a restart, what was bid
   * today still counts against the daily limit, and an event already bid on is not bid on again.
   */
  proposals?: readonly Proposal[];
  loads?: { shed(actuator: string): void; restore(actuator: string): void };
  randomId: () => string;
  /** Write `status.json` for `meter-agent status` (default true; the simulator turns it off). */
  writeStatus?: boolean;
  /** Where refused TRE content is reported (one line each; never a household id). */
  log?: (line: string) => void;
}

export const proposalSchema = z.object({
  bidId: z.string(),
  eventId: z.string(),
  /** The event's window start: the day the bid counts on for the daily limit. */
  windowStart: z.iso.datetime(),
  /** The event's bid deadline: a proposal not approved by then no longer counts. */
  bidDeadline: z.iso.datetime(),
  quantityWh: z.number().int().min(0),
  pricePerMWh: z.number().int(),
  loads: z.array(z.object({ name: z.string(), actuator: z.string(), from: z.string(), to: z.string() })),
  /** The event's revision the proposal was made for (absent: 0, the event as first raised). */
  revision: z.number().int().min(0).optional(),
  /**
   * `voided`: the DSM modified or cancelled the event before acceptance; `cancelled`: it did so
   * after accepting this bid (shed off, credit reversed); `overridden`: the household took the
   * accepted shed back (not delivered, no credit).
   */
  status: z.enum([
    'proposed',
    'bid',
    'declined',
    'accepted',
    'not-accepted',
    'voided',
    'cancelled',
    'overridden',
  ]),
});
export type Proposal = z.infer<typeof proposalSchema>;

/** What the agent knows, as `status.json` holds it for `meter-agent status` and `bids list`. */
export interface AgentStatus {
  /** The agent release that wrote it. */
  version: string;
  trust: LinkState;
  lastInterval: { intervalStart: string; importWh: number } | null;
  outboxDepth: number;
  runningBill: { periodStart: string; totalMinor: number; currency: string } | null;
  statements: number;
  openEvents: string[];
  proposals: Proposal[];
  rejectedSignatures: number;
  actuatorFailures: number;
  updatedAt: string;
}

/** The agent runs for years: it keeps the most recent statements, DR events, proposals and outcomes. */
export const AGENT_HISTORY = 100;

function keepRecent(history: unknown[] | Map<string, unknown>): void {
  if (Array.isArray(history)) history.splice(0, Math.max(0, history.length - AGENT_HISTORY));
  else for (const key of history.keys()) if (history.size > AGENT_HISTORY) history.delete(key);
}

export class HouseholdAgent {
  readonly tariffs = new Map<string, Tariff>();
  readonly events = new Map<string, DrAnnouncement>();
  readonly proposals = new Map<string, Proposal>();
  bill: Bill | undefined;
  readonly statements: HouseholdStatement[] = [];
  /** The verified DR outcomes, in arrival order (the most recent AGENT_HISTORY). */
  readonly outcomes: DrOutcome[] = [];
  lastInterval: IntervalRecord | undefined;
  readonly rejected = { signatures: 0 };
  /** Pending load switching. */
  private readonly timers: PendingTimers;
  /** The pending switching of each accepted bid (by bid id), cancelled when its shed ends early. */
  private readonly sheds = new Map<string, (() => void)[]>();
  /** DR outcomes come batched: one TRE-signed root per round, verified once (see `verifiedOutcome`). */
  readonly outcomeVerifier = new DrOutcomeVerifier(AGENT_HISTORY);

  /** Messages received and still being verified or handled. */
  private readonly handling = new Set<Promise<void>>();

  constructor(private readonly opts: HouseholdAgentOptions) {
    this.timers = new PendingTimers(opts.clock);
    for (const p of opts.proposals ?? []) this.proposals.set(p.bidId, { ...p });
    keepRecent(this.proposals);
    // After a restart (or a power cut) an accepted shed still under way or to come is armed again.
    for (const p of this.proposals.values()) if (p.status === 'accepted') this.armShed(p);
    opts.link.on('message', (topic, payload) => {
      const handled: Promise<void> = this.onMessage(topic, payload)
        .catch(() => {
          this.rejected.signatures++;
        })
        .finally(() => this.handling.delete(handled));
      this.handling.add(handled);
    });
    opts.link.on('state', () => this.saveStatus());
  }

  /** Resolves once every message received so far is handled (before a clean stop; in tests). */
  async idle(): Promise<void> {
    while (this.handling.size > 0) await Promise.all(this.handling);
  }

  /** A closed interval from the meter: queued durably, sent when the TRE is trusted. */
  recordInterval(rec: IntervalRecord): void {
    this.lastInterval = rec;
    this.opts.link.enqueue(`reading:${rec.intervalStart}`, topics.reading(this.opts.link.me.id), {
      v: PROTOCOL_VERSION,
      intervalStart: rec.intervalStart,
      intervalMinutes: rec.intervalMinutes,
      energyWh: rec.importWh,
      registerWh: rec.importRegisterWh,
      exportWh: rec.exportWh,
      exportRegisterWh: rec.exportRegisterWh,
      ...(rec.gap ? { gap: true } : {}),
    });
    this.saveStatus();
  }

  private async verified<T>(
    type: Parameters<typeof verifyContent>[0],
    payload: Buffer,
    schema: Parameters<typeof verifyContent>[3],
  ): Promise<T> {
    const cert = this.opts.link.treCertificate;
    if (!cert) throw new Error('no TRE certificate yet');
    const envelope = signedEnvelopeSchema.parse(JSON.parse(payload.toString('utf8')));
    return (await verifyContent(type, envelope.jws, cert.publicKey, schema)) as T;
  }

  private async onMessage(topic: string, payload: Buffer): Promise<void> {
    const me = this.opts.link.me;
    const parsed = parseTopic(topic);
    if (parsed?.scope === 'broadcast' && parsed.family === 'tariff') {
      const tariff = await this.verified<Tariff>('tariff', payload, tariffSchema);
      this.tariffs.set(tariff.supplierId, tariff);
    } else if (parsed?.scope === 'broadcast' && parsed.family === 'dr-event') {
      if (payload.length === 0) return; // cleared after its deadline
      const announcement = await this.verified<DrAnnouncement>(
        'drAnnouncement',
        payload,
        drAnnouncementSchema,
      );
      this.onAnnouncement(announcement);
    } else if (topic === topics.inbox(me, 'bill')) {
      this.bill = await this.verified<Bill>('bill', payload, billSchema);
    } else if (topic === topics.inbox(me, 'statement')) {
      this.statements.push(
        await this.verified<HouseholdStatement>('householdStatement', payload, householdStatementSchema),
      );
      keepRecent(this.statements);
    } else if (topic === topics.inbox(me, 'dr-outcome')) {
      const outcome = await this.verifiedOutcome(payload);
      if (outcome) this.onOutcome(outcome);
    }
    this.saveStatus();
  }

  /**
   * A DR outcome notice: this household's leaf of the round's Merkle tree, its inclusion proof and
   * the TRE-signed root. Counted only when the root's signature is the TRE's (verified once per
   * signed root), the leaf names this household, and the event and kind the root was signed for,
   * the proof leads from the leaf to that root, and the leaf's bid, if this agent made it, is for
   * that event. A refusal is counted and logged by name, without any household id.
   */
  private async verifiedOutcome(payload: Buffer): Promise<DrOutcome | undefined> {
    const cert = this.opts.link.treCertificate;
    if (!cert) throw new Error('no TRE certificate yet');
    let notice: unknown;
    try {
      notice = JSON.parse(payload.toString('utf8'));
    } catch {
      notice = undefined;
    }
    const checked = await this.outcomeVerifier.verify(notice, {
      meterId: this.opts.link.me.id,
      treKey: cert.publicKey,
      treKeyId: cert.fingerprint256,
    });
    if (!checked.ok) return this.refuseOutcome(checked.reason, checked.message);
    const bid = this.proposals.get(checked.outcome.bidId);
    if (bid && bid.eventId !== checked.outcome.eventId)
      return this.refuseOutcome('OTHER_ROUND', 'the outcome names a bid of this household for another event');
    return checked.outcome;
  }

  private refuseOutcome(reason: DrOutcomeRefusal, message: string): undefined {
    this.rejected.signatures++;
    this.opts.log?.(`DR outcome refused: ${reason}: ${message}`);
    return undefined;
  }

  /**
   * An event's TRE-signed announcement: a new event, the next revision of one (proposals for an
   * earlier revision are void, an accepted one cancelled, and the policy decides again), or its
   * cancellation (every proposal void, an accepted one cancelled). An announcement older than the
   * one known (a late retained copy) is ignored.
   */
  private onAnnouncement(announcement: DrAnnouncement): void {
    const { eventId } = announcement.event;
    const revision = announcement.revision ?? 0;
    const known = this.events.get(eventId);
    const knownRevision = known?.revision ?? 0;
    if (known && (knownRevision > revision || (knownRevision === revision && known.cancelled))) return;
    this.events.set(eventId, announcement);
    keepRecent(this.events);
    this.withdraw(eventId, announcement.cancelled ? Number.POSITIVE_INFINITY : revision);
    if (!announcement.cancelled) this.consider(announcement);
  }

  /**
   * The household's proposals for `eventId` made for a revision before `revision` no longer
   * stand: a proposal or bid is voided, an accepted (or overridden) bid cancelled and its shed ended
   * at once.
   */
  private withdraw(eventId: string, revision: number): void {
    for (const p of this.proposals.values()) {
      if (p.eventId !== eventId || (p.revision ?? 0) >= revision) continue;
      if (p.status === 'proposed' || p.status === 'bid') p.status = 'voided';
      else if (p.status === 'accepted' || p.status === 'overridden') this.cancelShed(p, 'cancelled');
    }
  }

  /** Ends an accepted shed now: its pending switching is cancelled and its loads restored. */
  private cancelShed(p: Proposal, status: 'cancelled' | 'overridden'): void {
    p.status = status;
    for (const cancel of this.sheds.get(p.bidId) ?? []) cancel();
    this.sheds.delete(p.bidId);
    const loads = this.opts.loads;
    if (!loads) return;
    const now = this.opts.clock.now();
    for (const load of p.loads)
      if (Date.parse(load.from) <= now) this.actuate(() => loads.restore(load.actuator));
  }

  /**
   * The household takes back its accepted shed of `eventId` (`meter-agent bids override <event>`,
   * a Home Assistant button): its loads are restored at once, the rest of the shed is cancelled,
   * and the TRE is told (queued durably on the household's own `override` topic, authenticated by
   * its certificate); the bid settles as not delivered, with no credit (the event's terms carry no
   * penalty). Returns the proposal, now `overridden`. Throws when the household has no accepted
   * bid for the event, or its shed is over.
   */
  override(eventId: string): Proposal {
    const p = [...this.proposals.values()].find((q) => q.eventId === eventId && q.status === 'accepted');
    if (!p) throw new Error(`no accepted bid for event ${eventId}`);
    const now = this.opts.clock.now();
    if (p.loads.length > 0 && p.loads.every((l) => Date.parse(l.to) <= now))
      throw new Error(`the shed of event ${eventId} is over`);
    this.cancelShed(p, 'overridden');
    this.opts.link.enqueue(`override:${p.bidId}`, topics.drOverride(this.opts.link.me.id), {
      v: PROTOCOL_VERSION,
      eventId: p.eventId,
      bidId: p.bidId,
    });
    this.saveStatus();
    return p;
  }

  /** Every accepted shed under way or to come is overridden (the Home Assistant button); returns their event ids. */
  overrideActive(): string[] {
    const now = this.opts.clock.now();
    const events = new Set(
      [...this.proposals.values()]
        .filter((p) => p.status === 'accepted' && p.loads.some((l) => Date.parse(l.to) > now))
        .map((p) => p.eventId),
    );
    for (const eventId of events) this.override(eventId);
    return [...events];
  }

  private consider(announcement: DrAnnouncement): void {
    const event = announcement.event;
    const revision = announcement.revision ?? 0;
    if (this.opts.mode === 'never' || !this.opts.propose) return;
    if (
      [...this.proposals.values()].some((p) => p.eventId === event.eventId && (p.revision ?? 0) >= revision)
    )
      return;
    if (Date.parse(event.bidDeadline) <= this.opts.clock.now()) return;
    const proposal = this.opts.propose(event, this.committedBids());
    if (!('bid' in proposal)) return;
    const p: Proposal = {
      bidId: this.opts.randomId(),
      eventId: event.eventId,
      windowStart: event.windowStart,
      bidDeadline: event.bidDeadline,
      ...proposal.bid,
      ...(revision > 0 ? { revision } : {}),
      status: 'proposed',
    };
    this.proposals.set(p.bidId, p);
    keepRecent(this.proposals);
    if (this.opts.mode === 'auto-bid') this.approve(p.bidId);
  }

  /**
   * The bids that count against the policy's daily limit: sent and not refused (`bid`, awaiting
   * the DSM, which may still accept it; `accepted`), and proposals awaiting the household's
   * approval before their event's bid deadline. Declined and not-accepted ones do not count.
   * Which of them fall on an event's day is the bidder's business (the policy's time zone).
   */
  committedBids(): CommittedBid[] {
    const now = this.opts.clock.now();
    return [...this.proposals.values()]
      .filter(
        (p) =>
          p.status === 'bid' ||
          p.status === 'accepted' ||
          (p.status === 'proposed' && Date.parse(p.bidDeadline) > now),
      )
      .map((p) => ({ windowStart: p.windowStart, quantityWh: p.quantityWh }));
  }

  /** Sends a proposed bid (auto mode, or `meter-agent bids approve`). */
  approve(bidId: string): Proposal {
    const p = this.proposals.get(bidId);
    if (p?.status !== 'proposed') throw new Error(`no open proposal ${bidId}`);
    p.status = 'bid';
    this.opts.link.enqueue(`bid:${p.bidId}`, topics.bid(this.opts.link.me.id), {
      v: PROTOCOL_VERSION,
      bidId: p.bidId,
      eventId: p.eventId,
      quantityWh: p.quantityWh,
      pricePerMWh: p.pricePerMWh,
    });
    this.saveStatus();
    return p;
  }

  decline(bidId: string): void {
    const p = this.proposals.get(bidId);
    if (p?.status === 'proposed') p.status = 'declined';
    this.saveStatus();
  }

  private onOutcome(outcome: DrOutcome): void {
    const known = (o: DrOutcome) =>
      o.eventId === outcome.eventId && o.kind === outcome.kind && o.bidId === outcome.bidId;
    if (this.outcomes.some(known)) return; // a resent notice
    this.outcomes.push(outcome);
    keepRecent(this.outcomes);
    const p = this.proposals.get(outcome.bidId);
    if (!p) return;
    if (outcome.outcome === 'cancelled') {
      if (p.status === 'accepted' || p.status === 'overridden') this.cancelShed(p, 'cancelled');
      return;
    }
    if (outcome.outcome === 'not-accepted' && p.status === 'bid') p.status = 'not-accepted';
    // Only a bid still standing is accepted (not one voided by a change meanwhile).
    if (outcome.outcome !== 'accepted' || p.status !== 'bid') return;
    p.status = 'accepted';
    this.armShed(p);
  }

  /** Schedules an accepted bid's switching: each load shed at its `from`, restored at its `to` (a load whose window is over is left alone). */
  private armShed(p: Proposal): void {
    const loads = this.opts.loads;
    if (!loads) return;
    const pending: (() => void)[] = [];
    const now = this.opts.clock.now();
    for (const load of p.loads) {
      const to = Date.parse(load.to) - now;
      if (to <= 0) continue;
      const from = Math.max(0, Date.parse(load.from) - now);
      pending.push(this.timers.after(from, () => this.actuate(() => loads.shed(load.actuator))));
      pending.push(this.timers.after(to, () => this.actuate(() => loads.restore(load.actuator))));
    }
    this.sheds.set(p.bidId, pending);
  }

  /** Actuator failures (e.g. an actuator kind this box cannot drive) are counted, never fatal. */
  private actuate(fn: () => void): void {
    try {
      fn();
    } catch {
      this.actuatorFailures++;
    }
  }

  actuatorFailures = 0;

  status(): AgentStatus {
    return {
      version: AGENT_VERSION,
      trust: this.opts.link.state,
      lastInterval: this.lastInterval
        ? { intervalStart: this.lastInterval.intervalStart, importWh: this.lastInterval.importWh }
        : null,
      outboxDepth: this.opts.link.outboxDepth,
      runningBill: this.bill
        ? {
            periodStart: this.bill.periodStart,
            totalMinor: this.bill.runningTotalMinor,
            currency: this.bill.currency,
          }
        : null,
      statements: this.statements.length,
      openEvents: [...this.events.values()]
        .filter((e) => !e.cancelled && Date.parse(e.expiresAt) > this.opts.clock.now())
        .map((e) => e.event.eventId),
      proposals: [...this.proposals.values()],
      rejectedSignatures: this.rejected.signatures,
      actuatorFailures: this.actuatorFailures,
      updatedAt: new Date(this.opts.clock.now()).toISOString(),
    };
  }

  saveStatus(): void {
    if (this.opts.writeStatus === false) return;
    // Written aside and renamed: `meter-agent status` never reads half a file, even after a crash.
    const file = join(this.opts.stateDir, 'status.json');
    writeFileSync(`${file}.tmp`, `${JSON.stringify(this.status(), null, 2)}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  stop(): void {
    this.timers.clear();
  }
}

/**
 * The proposals in a previous run's `status.json` (none when there is none, it is unreadable, or
 * from a version without windows), for `HouseholdAgentOptions.proposals`.
 */
export function previousProposals(stateDir: string): Proposal[] {
  let status: unknown;
  try {
    status = JSON.parse(readFileSync(join(stateDir, 'status.json'), 'utf8'));
  } catch {
    return [];
  }
  const proposals = (status as { proposals?: unknown } | null)?.proposals;
  if (!Array.isArray(proposals)) return [];
  return proposals.flatMap((p) => {
    const parsed = proposalSchema.safeParse(p);
    return parsed.success ? [parsed.data] : [];
  });
}
