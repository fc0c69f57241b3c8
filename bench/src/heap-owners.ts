/**
 * Who holds the live JS heap: from a V8 heap snapshot, the bytes each owner keeps alive, i.e. the
 * objects no longer reachable from the GC roots once that owner's instances are taken away
 * (retained size of a set of objects). Owners are named by their classes, so the TRE, the meter
 * agents and the simulator's own bookkeeping can be told apart in one all-in-one process.
 */
import { readFileSync } from 'node:fs';

interface HeapSnapshot {
  snapshot: {
    meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] };
  };
  nodes: number[];
  edges: number[];
  strings: string[];
}

export interface HeapOwnership {
  totalBytes: number;
  owners: Record<string, { instances: number; retainedBytes: number }>;
}

export function heapOwners(snapshotFile: string, owners: Record<string, string[]>): HeapOwnership {
  const s = JSON.parse(readFileSync(snapshotFile, 'utf8')) as HeapSnapshot;
  const nf = s.snapshot.meta.node_fields;
  const ef = s.snapshot.meta.edge_fields;
  const N = nf.length;
  const E = ef.length;
  const typeField = nf.indexOf('type');
  const nameField = nf.indexOf('name');
  const sizeField = nf.indexOf('self_size');
  const edgeCountField = nf.indexOf('edge_count');
  const weak = s.snapshot.meta.edge_types[0].indexOf('weak');
  const objectType = s.snapshot.meta.node_types[0].indexOf('object');
  const count = s.nodes.length / N;
  const firstEdge = new Uint32Array(count + 1);
  for (let i = 0, e = 0; i < count; i++) {
    firstEdge[i] = e;
    e += s.nodes[i * N + edgeCountField]! * E;
  }
  firstEdge[count] = s.edges.length;

  /** Bytes reachable from the root (node 0) without passing through `removed`. */
  const reachable = (removed: Uint8Array): { bytes: number; seen: Uint8Array } => {
    const seen = new Uint8Array(count);
    const stack = [0];
    seen[0] = 1;
    let bytes = 0;
    while (stack.length > 0) {
      const n = stack.pop()!;
      bytes += s.nodes[n * N + sizeField]!;
      for (let e = firstEdge[n]!; e < firstEdge[n + 1]!; e += E) {
        if (s.edges[e] === weak) continue;
        const to = s.edges[e + 2]! / N;
        if (seen[to] || removed[to]) continue;
        seen[to] = 1;
        stack.push(to);
      }
    }
    return { bytes, seen };
  };
  const none = new Uint8Array(count);
  const all = reachable(none);
  const result: HeapOwnership = { totalBytes: all.bytes, owners: {} };
  for (const [owner, classes] of Object.entries(owners)) {
    const names = new Set(classes);
    const removed = new Uint8Array(count);
    let instances = 0;
    for (let i = 0; i < count; i++)
      if (s.nodes[i * N + typeField] === objectType && names.has(s.strings[s.nodes[i * N + nameField]!]!)) {
        removed[i] = 1;
        instances++;
      }
    result.owners[owner] = { instances, retainedBytes: all.bytes - reachable(removed).bytes };
  }
  return result;
}
