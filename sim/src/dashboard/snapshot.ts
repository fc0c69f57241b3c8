/** One demand-response round as the DSM saw it. */
export interface DrRoundRow {
  eventId: string;
  /** The delivery window (ISO instants). */
  windowStart: string;
  windowEnd: string;
  bids: number;
  accepted: number;
  creditMinor: number;
  delivered: number;
  notDelivered: number;
}

/** The statements the supplier received for one billing period. */
export interface StatementPeriodRow {
  periodStart: string;
  periodEnd: string;
  statements: number;
  /** Sum of the statements' totals, minor units of `currency`. */
  totalMinor: number;
  /** Statements marked `estimated` (readings missing from the period). */
  estimated: number;
}

/** What the dashboard shows; the demo publishes one of these every tick. Energy in Wh, money in minor units. */
export interface DashboardSnapshot {
  simTime: string;
  speed: number;
  households: number;
  attestation: {
    status: 'pending' | 'trusted' | 'untrusted' | 'unavailable';
    detail: string;
    trustedAgents: number;
    pcr?: string;
  };
  /** Per DNO group: released noisy totals next to the simulator's true totals. */
  aggregates: {
    groupId: string;
    points: {
      t: number;
      noisyWh: number;
      trueWh: number;
      /** The total the TRE noised: the true total with each member clamped to the release's bound. */
      clampedWh: number;
      /** The TRE's stated bound on |noise| at 95 %, from the release. */
      bound95Wh: number;
    }[];
  }[];
  billing: {
    /** Sum over households of their running bills (the open period's). */
    points: { t: number; runningTotalMinor: number }[];
    statements: number;
    /** Newest period first. */
    periods: StatementPeriodRow[];
    currency: string;
  };
  dr: DrRoundRow[];
  /** Distribution of today's privacy budget spent per household (fraction of the daily budget). */
  budget: { bucket: string; households: number }[];
  alerts: { at: string; kind: string; message: string }[];
}
