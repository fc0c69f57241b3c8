/**
 * Per-identity limits that keep one party (or a stolen certificate) from flooding the TRE:
 * concurrent sessions per identity, and a token bucket of messages per second. Measured in real
 * (monotonic) time on purpose: they protect real CPU and disk, whatever the simulated clock says.
 */
export interface IdentityLimitOptions {
  connectionsPerIdentity: number;
  messagesPerSecond: number;
  burst: number;
}

export const DEFAULT_LIMITS: IdentityLimitOptions = {
  connectionsPerIdentity: 4,
  messagesPerSecond: 100,
  burst: 500,
};

export class IdentityLimits {
  private readonly sessions = new Map<string, number>();
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    readonly options: IdentityLimitOptions = DEFAULT_LIMITS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Reserves a session slot; false when the identity already has the maximum. */
  openSession(key: string): boolean {
    const n = this.sessions.get(key) ?? 0;
    if (n >= this.options.connectionsPerIdentity) return false;
    this.sessions.set(key, n + 1);
    return true;
  }

  closeSession(key: string): void {
    const n = (this.sessions.get(key) ?? 1) - 1;
    if (n <= 0) {
      this.sessions.delete(key);
      this.buckets.delete(key);
    } else this.sessions.set(key, n);
  }

  /** Takes one message token; false when the identity is over its rate. */
  takeMessage(key: string): boolean {
    const t = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.options.burst, at: t };
    b.tokens = Math.min(this.options.burst, b.tokens + ((t - b.at) / 1000) * this.options.messagesPerSecond);
    b.at = t;
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
