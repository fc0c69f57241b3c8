/** Test support: a meter capture (DSMR 5 telegrams every 10 s, with noise), as a P1 cable would record it. */
import { formatDsmrTelegram } from '@tre/hardware';

export function meterCapture(
  startMs: number,
  minutes: number,
  wattsAt: (t: number) => number,
): { bytes: Buffer; registerAt: (t: number) => number } {
  const parts: string[] = [];
  let wattSeconds = 5_000_000 * 3600;
  const registers: [number, number][] = [];
  for (let t = startMs; t <= startMs + minutes * 60_000; t += 10_000) {
    wattSeconds += wattsAt(t) * 10;
    const wh = Math.floor(wattSeconds / 3600);
    registers.push([t, wh]);
    parts.push(
      `\x00noise${formatDsmrTelegram({ timestamp: new Date(t), dst: false, importWh: [wh, 0], powerW: wattsAt(t) })}`,
    );
  }
  return {
    bytes: Buffer.from(parts.join(''), 'latin1'),
    registerAt: (t: number) => registers.filter(([at]) => at <= t).pop()![1],
  };
}
