/**
 * Time comes from an injected clock: domain code never calls `Date.now()` or `setTimeout`
 * directly, so the simulator can run days in minutes under the same rules.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export interface TimerHandle {
  unref?(): unknown;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * A clock that only moves when told to. `advance` runs due timers in time order; used by tests
 * and by the simulator, which advances it as fast as the system keeps up.
 */
export class ManualClock implements Clock {
  private current: number;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  constructor(startMs: number) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.current + Math.max(0, ms), fn });
    return { id } as TimerHandle;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers.delete((handle as { id: number }).id);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) {
        if (entry[1].at <= target && (!next || entry[1].at < next[1].at)) next = entry;
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.current = Math.max(this.current, next[1].at);
      next[1].fn();
    }
    this.current = target;
  }
}

/**
 * Real time, sped up: simulated time runs `speed` times faster than real time from the real
 * instant `epochMs` on (simulated now = epoch + (real now - epoch) x speed). Two processes given
 * the same epoch and speed share one timeline, so a TRE restarted in a test continues where it was.
 */
export class AcceleratedClock implements Clock {
  constructor(
    readonly epochMs: number,
    readonly speed: number,
    private readonly real: () => number = () => Date.now(),
  ) {
    if (!(speed >= 1)) throw new RangeError('speed must be at least 1');
  }

  now(): number {
    return Math.floor(this.epochMs + (this.real() - this.epochMs) * this.speed);
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return setTimeout(fn, Math.max(0, ms / this.speed));
  }

  clearTimeout(handle: TimerHandle): void {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  }
}

/** An owner's pending timers, cancelled together when it stops; each forgets itself when it fires. */
export class PendingTimers {
  private readonly pending = new Set<TimerHandle>();

  constructor(private readonly clock: Clock) {}

  /** Runs `fn` after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void): () => void {
    const timer = this.clock.setTimeout(() => {
      this.pending.delete(timer);
      fn();
    }, ms);
    this.pending.add(timer);
    return () => {
      this.clock.clearTimeout(timer);
      this.pending.delete(timer);
    };
  }

  clear(): void {
    for (const timer of this.pending) this.clock.clearTimeout(timer);
    this.pending.clear();
  }
}
