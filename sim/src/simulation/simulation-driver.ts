/**
 * Drives simulated time. The TRE, the agents and the grid parties share one ManualClock; the
 * driver moves it from interval boundary to interval boundary, lets every party finish what that
 * moment caused (quiescence), and never runs faster than `speed` times real time. The TRE enforces
 * its rules (deadlines, billing periods, budgets) against this clock exactly as in real time.
 */
import type { ManualClock } from '@tre/protocol';

export interface DriverStep {
  /** Called at each boundary after the clock reached it (e.g. households close their interval). */
  atBoundary(t: number): Promise<void> | void;
  /** True when nothing caused so far is still in flight. */
  quiet(): boolean;
}

export class SimulationDriver {
  private stopped = false;

  constructor(
    private readonly clock: ManualClock,
    private readonly stepMs: number,
    private readonly speed: number,
    private readonly step: DriverStep,
  ) {}

  stop(): void {
    this.stopped = true;
  }

  /** Runs until `untilMs` simulated time (or stop()). */
  async run(untilMs: number, onStep?: (t: number) => void): Promise<void> {
    const realStart = performance.now();
    const simStart = this.clock.now();
    while (!this.stopped && this.clock.now() < untilMs) {
      const next = Math.min(untilMs, (Math.floor(this.clock.now() / this.stepMs) + 1) * this.stepMs);
      // Speed cap: simulated time may not run ahead of speed x real time.
      const realDue = (next - simStart) / this.speed;
      const wait = realDue - (performance.now() - realStart);
      if (wait > 1) await sleep(wait);
      this.clock.advance(next - this.clock.now());
      await this.settle();
      await this.step.atBoundary(next);
      await this.settle();
      onStep?.(next);
    }
  }

  /** Waits until the system is quiet (checked on the event loop, bounded). */
  async settle(maxMs = 30_000): Promise<void> {
    const end = performance.now() + maxMs;
    let quietRounds = 0;
    while (quietRounds < 3 && performance.now() < end) {
      await sleep(2);
      quietRounds = this.step.quiet() ? quietRounds + 1 : 0;
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
