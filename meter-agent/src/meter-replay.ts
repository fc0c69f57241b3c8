/**
 * `meter-agent read --replay`: what the agent makes of a meter's bytes from a capture file: each
 * telegram parsed (or rejected with its reason) and the interval energy that follows. A live port
 * is read through the daemon's reader pipeline (`meter-reading.ts`).
 */
import {
  type DsmrTelegram,
  IntervalAccumulator,
  type IntervalRecord,
  parseDsmrTelegram,
  TelegramFramer,
} from '@tre/hardware';
import { telegramReading } from './meter-reading.js';

export interface ReplayResult {
  telegrams: DsmrTelegram[];
  rejected: { reason: string; detail: string }[];
  intervals: IntervalRecord[];
  noiseBytes: number;
}

export function replay(bytes: Buffer, intervalMinutes: 15 | 30 = 15): ReplayResult {
  const framer = new TelegramFramer();
  const acc = new IntervalAccumulator(intervalMinutes);
  const result: ReplayResult = { telegrams: [], rejected: [], intervals: [], noiseBytes: 0 };
  for (const text of framer.push(bytes)) {
    const parsed = parseDsmrTelegram(text);
    if (!parsed.ok) {
      result.rejected.push({ reason: parsed.reason, detail: parsed.detail });
      continue;
    }
    result.telegrams.push(parsed.telegram);
    const reading = telegramReading(parsed.telegram);
    if (reading) result.intervals.push(...acc.push(reading));
  }
  result.noiseBytes = framer.stats.noiseBytes;
  return result;
}
