/**
 * Whether anything is still on its way between the shards, for the driver's quiescence: a partial
 * or bid batch held up across a clock step reaches its owner or gateway late, and on a link timed
 * by the simulated clock a message opened after the step would be refused as stale (`maxAgeMs`).
 * Sends between shards are acknowledged once handled, so each link's work in hand
 * (`ShardLink.busy`: sends not yet answered, received messages being handled) covers it all.
 */
import type { JoinedCluster } from '@tre/tre-broker';

export class ShardActivity {
  constructor(private readonly joined: readonly JoinedCluster[]) {}

  /** True when no link has a send unanswered or a message in hand. */
  idle(): boolean {
    return this.joined.every(({ link }) => link.busy === 0);
  }
}
