/**
 * SIGINT and SIGTERM for a command that stops cleanly (a daemon closing its store, releasing a lease,
 * flushing a journal): the first signal starts the clean stop; a repeat while it runs (systemd's stop
 * and a user's Ctrl-C, a supervisor resending) is said once and otherwise ignored, so it cannot kill
 * the process half-way with Node's default action (which is what `process.once` leaves behind after
 * the first signal). SIGKILL still stops it at once. Optionally a clean stop that has not finished
 * within a bound exits with a non-zero status and says why. `dispose()` once stopped removes the
 * listeners (commands are run in-process by tests, many times over).
 */

/** What signal listeners are taken from (`process`; an `EventEmitter` in tests). */
export interface SignalSource {
  on(event: NodeJS.Signals, listener: () => void): unknown;
  off(event: NodeJS.Signals, listener: () => void): unknown;
}

export interface StopSignalsOptions {
  /** Prefix of the lines the default `say` writes to stderr, e.g. `tre-sim` (`<name>: <message>`). */
  name?: string;
  /**
   * Says a repeated signal (once per stop) and an overdue stop; default: a line on stderr. A
   * daemon with a structured log passes its logger here.
   */
  say?: (message: string, event: { kind: 'repeat' | 'overdue'; signal?: NodeJS.Signals }) => void;
  /** A clean stop not finished this long after it began exits with `overdueExitCode` (default: no bound). */
  boundMs?: number;
  /** The status of an overdue stop (default 1). */
  overdueExitCode?: number;
  /** The signals taken (default SIGINT and SIGTERM). */
  signals?: readonly NodeJS.Signals[];
  /** Default `process`. */
  source?: SignalSource;
  /** Default `process.exit`. */
  exit?: (code: number) => void;
}

export interface StopSignals {
  /** The first signal, once one came. */
  readonly signal: NodeJS.Signals | undefined;
  /** Whether a clean stop began (a signal, or `stopping()`). */
  readonly isStopping: boolean;
  /** Settles with the first signal; never rejects (and never settles if none comes). */
  readonly first: Promise<NodeJS.Signals>;
  /** Runs `fn` on the first signal, at once if it already came. */
  onSignal(fn: (signal: NodeJS.Signals) => void): void;
  /**
   * A clean stop that began without a signal (a lost lease): signals from now on are repeats, and
   * the bound runs.
   */
  stopping(why: string): void;
  /** Removes the listeners and the bound; call once stopped (idempotent). */
  dispose(): void;
}

export const ALREADY_STOPPING = 'already stopping (clean stop in progress); send SIGKILL to stop at once';

/** Takes the stop signals from now until `dispose()`. */
export function takeStopSignals(opts: StopSignalsOptions = {}): StopSignals {
  const source: SignalSource = opts.source ?? process;
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const say =
    opts.say ??
    ((message: string) => process.stderr.write(`${opts.name ? `${opts.name}: ` : ''}${message}\n`));
  const signals = opts.signals ?? (['SIGINT', 'SIGTERM'] as const);
  let first: NodeJS.Signals | undefined;
  let why: string | undefined;
  let repeatSaid = false;
  let disposed = false;
  let bound: NodeJS.Timeout | undefined;
  const callbacks: ((signal: NodeJS.Signals) => void)[] = [];
  let settle: (signal: NodeJS.Signals) => void = () => {};
  const firstSignal = new Promise<NodeJS.Signals>((resolve) => {
    settle = resolve;
  });

  const startBound = () => {
    if (opts.boundMs === undefined || bound || disposed) return;
    const code = opts.overdueExitCode ?? 1;
    bound = setTimeout(() => {
      say(`clean stop (${why}) not finished within ${opts.boundMs! / 1000} s: exiting with status ${code}`, {
        kind: 'overdue',
        ...(first ? { signal: first } : {}),
      });
      exit(code);
    }, opts.boundMs);
    bound.unref(); // never what keeps the process alive
  };

  const listeners = signals.map((signal) => {
    const listener = () => {
      if (disposed) return;
      if (why !== undefined) {
        if (!repeatSaid) say(`${signal} again: ${ALREADY_STOPPING}`, { kind: 'repeat', signal });
        repeatSaid = true;
        return;
      }
      first = signal;
      why = signal;
      startBound();
      settle(signal);
      for (const fn of callbacks.splice(0)) fn(signal);
    };
    source.on(signal, listener);
    return { signal, listener };
  });

  return {
    get signal() {
      return first;
    },
    get isStopping() {
      return why !== undefined;
    },
    first: firstSignal,
    onSignal(fn) {
      if (first) fn(first);
      else callbacks.push(fn);
    },
    stopping(reason) {
      if (why !== undefined) return;
      why = reason;
      startBound();
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      clearTimeout(bound);
      callbacks.length = 0;
      for (const { signal, listener } of listeners) source.off(signal, listener);
    },
  };
}
