/** One demand-response round as the DSM saw it. */
export interface DrRoundRow {
  eventId: string;
  bids: number;
  accepted: number;
  creditMinor: number;
  delivered: number;
  notDelivered: number;
}

/** What the dashboard shows; the demo publishes one of these every tick. */
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
    }[];
  }[];
  billing: { points: { t: number; runningTotalMinor: number }[]; statements: number; currency: string };
  dr: DrRoundRow[];
  /** Distribution of today's privacy budget spent per household (fraction of the daily budget). */
  budget: { bucket: string; households: number }[];
  alerts: { at: string; kind: string; message: string }[];
}
