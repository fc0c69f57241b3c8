import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * JSON logs on stderr. Privacy rule: nothing at info level or above carries a reading, a bid or a
 * household id (use `loggableIdentity`); such detail goes to debug, built lazily.
 */
export function createLogger(
  opts: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {},
): Logger {
  return pino(
    {
      name: opts.name ?? 'tre',
      level: opts.level ?? process.env.TRE_LOG_LEVEL ?? 'info',
      base: { pid: process.pid },
    },
    (opts.destination as pino.DestinationStream | undefined) ?? pino.destination(2),
  );
}
