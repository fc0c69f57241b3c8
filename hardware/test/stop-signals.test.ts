/**
 * The stop signals of a command, on a fake emitter: the first signal starts the clean stop, a repeat
 * while it runs is said once and ignored, an overdue stop exits non-zero saying why, and `dispose()`
 * leaves no listener behind. (`tre start` taking two SIGTERMs for real: tre-broker/test/stop-signals.)
 */
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ALREADY_STOPPING, takeStopSignals } from '../src/process/stop-signals.js';

function fake() {
  const source = new EventEmitter();
  const said: { message: string; kind: string; signal?: string }[] = [];
  const exits: number[] = [];
  return {
    source,
    said,
    exits,
    opts: {
      source,
      say: (message: string, e: { kind: string; signal?: string }) => said.push({ message, ...e }),
      exit: (code: number) => exits.push(code),
    },
    listeners: () => source.listenerCount('SIGINT') + source.listenerCount('SIGTERM'),
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('takeStopSignals', () => {
  it('settles with the first signal and runs what it starts, once', async () => {
    const f = fake();
    const signals = takeStopSignals(f.opts);
    const started: string[] = [];
    signals.onSignal((s) => started.push(s));
    expect(signals.isStopping).toBe(false);
    f.source.emit('SIGTERM');
    await expect(signals.first).resolves.toBe('SIGTERM');
    expect(signals.signal).toBe('SIGTERM');
    expect(signals.isStopping).toBe(true);
    expect(started).toEqual(['SIGTERM']);
    // Registered after the signal: run at once.
    signals.onSignal((s) => started.push(`late ${s}`));
    expect(started).toEqual(['SIGTERM', 'late SIGTERM']);
    signals.dispose();
  });

  it('says a repeat while stopping once, ignores every repeat, and keeps its listeners until disposed', () => {
    const f = fake();
    const signals = takeStopSignals(f.opts);
    const started: string[] = [];
    signals.onSignal((s) => started.push(s));
    f.source.emit('SIGTERM');
    f.source.emit('SIGTERM');
    f.source.emit('SIGINT');
    f.source.emit('SIGTERM');
    expect(started).toEqual(['SIGTERM']);
    expect(signals.signal).toBe('SIGTERM');
    expect(f.said).toEqual([
      { message: `SIGTERM again: ${ALREADY_STOPPING}`, kind: 'repeat', signal: 'SIGTERM' },
    ]);
    expect(f.exits).toEqual([]);
    expect(f.listeners()).toBe(2);
    signals.dispose();
    signals.dispose();
    expect(f.listeners()).toBe(0);
  });

  it('treats a stop begun without a signal (a lost lease) as stopping: the first signal is a repeat', () => {
    const f = fake();
    const signals = takeStopSignals(f.opts);
    const started: string[] = [];
    signals.onSignal((s) => started.push(s));
    signals.stopping('shard lease lost');
    f.source.emit('SIGINT');
    expect(started).toEqual([]);
    expect(signals.signal).toBeUndefined();
    expect(f.said.map((s) => s.kind)).toEqual(['repeat']);
    signals.dispose();
  });

  it('exits with a non-zero status, saying why, when the clean stop outlasts its bound', () => {
    vi.useFakeTimers();
    const f = fake();
    const signals = takeStopSignals({ ...f.opts, boundMs: 5_000 });
    vi.advanceTimersByTime(60_000); // no bound before a stop begins
    f.source.emit('SIGTERM');
    vi.advanceTimersByTime(4_999);
    expect(f.exits).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(f.exits).toEqual([1]);
    expect(f.said.at(-1)).toEqual({
      message: 'clean stop (SIGTERM) not finished within 5 s: exiting with status 1',
      kind: 'overdue',
      signal: 'SIGTERM',
    });
    signals.dispose();
  });

  it('has no bound left once disposed, nor listeners, and ignores a signal after', () => {
    vi.useFakeTimers();
    const f = fake();
    const signals = takeStopSignals({ ...f.opts, boundMs: 1_000, overdueExitCode: 3 });
    signals.stopping('the run ended');
    signals.dispose();
    vi.advanceTimersByTime(10_000);
    expect(f.exits).toEqual([]);
    expect(f.listeners()).toBe(0);
  });

  it('takes SIGINT and SIGTERM from the process by default and gives them back', () => {
    const before = [process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')];
    const signals = takeStopSignals({ name: 'test' });
    expect([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')]).toEqual(
      before.map((n) => n + 1),
    );
    signals.dispose();
    expect([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')]).toEqual(before);
  });
});
