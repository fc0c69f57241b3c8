/** The reference DNO: defines aggregation groups over its meters and collects the noisy totals. */
import { type Aggregate, aggregateSchema, PROTOCOL_VERSION, parseTopic, topics } from '@tre/protocol';
import type { PartyClient } from './party-client.js';

export class Dno {
  /** Released totals by group id. */
  readonly releases = new Map<string, Aggregate[]>();
  readonly refusals: string[] = [];

  constructor(
    readonly party: PartyClient,
    readonly dnoId: string,
  ) {
    party.client.on('message', (topic, payload) => {
      const route = parseTopic(topic);
      if (route?.scope === 'party' && route.family === 'aggregate' && route.owner.id === dnoId) {
        const parsed = aggregateSchema.safeParse(JSON.parse(payload.toString('utf8')));
        if (!parsed.success) return;
        const list = this.releases.get(parsed.data.groupId) ?? [];
        list.push(parsed.data);
        this.releases.set(parsed.data.groupId, list);
      } else if (topic === topics.inbox({ role: 'dno', id: dnoId }, 'receipt')) {
        const r = JSON.parse(payload.toString('utf8')) as {
          status: string;
          reason?: string;
          message?: string;
        };
        if (r.status === 'refused') this.refusals.push(`${r.reason}: ${r.message}`);
      }
    });
  }

  async start(): Promise<void> {
    await this.party.subscribe([
      topics.aggregateFilter(this.dnoId),
      topics.inbox({ role: 'dno', id: this.dnoId }, 'receipt'),
    ]);
  }

  /** Feeder groups: consecutive blocks of `size` meters (disjoint, so no set difference isolates anyone). */
  async defineFeeders(meterIds: string[], size: number): Promise<string[]> {
    const groups = [];
    for (let i = 0; i + size <= meterIds.length; i += size)
      groups.push({ groupId: `feeder-${groups.length + 1}`, meters: meterIds.slice(i, i + size) });
    await this.party.publish(topics.groups(this.dnoId), {
      v: PROTOCOL_VERSION,
      requestId: `groups-${Date.now()}`,
      groups,
    });
    return groups.map((g) => g.groupId);
  }
}
