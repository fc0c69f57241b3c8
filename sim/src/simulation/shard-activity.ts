/**
 * Whether anything is still on its way between the shards, for the driver's quiescence: a partial
 * or bid batch held up across a clock step reaches its owner or gateway late, and on a link timed
 * by the simulated clock a message opened after the step would be refused as stale (`maxAgeMs`).
 * Counted here: each link's work in hand (`ShardLink.busy`: sends not yet given to NATS, received
 * messages being handled) and the messages published but not yet opened by their receiver (every
 * shard's link counts what it sent and what it received, refused or took as a rekey notice, and all
 * shards run in this process).
 */
import type { JoinedCluster } from '@tre/tre-broker';

export class ShardActivity {
  constructor(private readonly joined: readonly JoinedCluster[]) {}

  /** Messages sealed and published that no shard has opened yet. */
  get inTransit(): number {
    let transit = 0;
    for (const { link } of this.joined) {
      const { sent, received, rekeys, refused } = link.stats;
      transit += sent - received - rekeys;
      for (const n of Object.values(refused)) transit -= n;
    }
    return transit;
  }

  /** True when no link has work in hand and every published message was opened. */
  idle(): boolean {
    return this.joined.every(({ link }) => link.busy === 0) && this.inTransit <= 0;
  }
}
