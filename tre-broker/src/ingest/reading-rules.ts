/**
 * The bounds rules of an interval reading, pure: its effective energy (the register difference with
 * the previous interval's in-bounds reading, else the reported energy) and whether it is excluded
 * (register backwards against a neighbour, negative energy, or more than capacity x interval).
 */
import type { Alert } from '@tre/protocol';

export interface Neighbour {
  register_wh: number;
  status: string;
}

export interface Judged {
  effectiveWh: number;
  excluded?: { why: string; alert: Alert['kind'] };
}

export function judgeReading(
  registerWh: number,
  energyWh: number,
  prev: Neighbour | undefined,
  next: Neighbour | undefined,
  maxWh: number,
): Judged {
  const effectiveWh = prev && prev.status === 'ok' ? registerWh - prev.register_wh : energyWh;
  if (
    (prev && registerWh < prev.register_wh) ||
    (next && next.status === 'ok' && registerWh > next.register_wh)
  )
    return { effectiveWh, excluded: { why: 'the register went backwards', alert: 'register-backwards' } };
  if (effectiveWh < 0)
    return { effectiveWh, excluded: { why: 'negative interval energy', alert: 'reading-out-of-bounds' } };
  if (effectiveWh > maxWh)
    return {
      effectiveWh,
      excluded: {
        why: `interval energy above installed capacity x interval (${maxWh} Wh)`,
        alert: 'reading-out-of-bounds',
      },
    };
  return { effectiveWh };
}
