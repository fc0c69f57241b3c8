/**
 * Where a process's time went: summarises a V8 `.cpuprofile` (from `node --cpu-prof`) into self
 * time per function and per component (by the package or built-in module the code lives in).
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

function component(url: string, fn: string): string {
  if (!url)
    return fn === '(garbage collector)'
      ? 'garbage collection'
      : fn === '(idle)'
        ? 'idle'
        : fn === '(program)'
          ? 'native / program'
          : 'native';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  if (url.startsWith('node:'))
    return url
      .replace(/^node:(internal\/)?/, 'node:')
      .split('/')
      .slice(0, 2)
      .join('/');
  const ws = /\/(tre-broker|protocol|hardware)\/dist\/(.+?)\.js/.exec(url);
  return ws ? `${ws[1]}/${ws[2]}` : url;
}

export function summariseProfile(path: string, top = 8): { component: string; share: number }[] {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as { nodes: ProfileNode[]; samples: number[] };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const counts = new Map<string, number>();
  let total = 0;
  for (const id of profile.samples) {
    const node = byId.get(id);
    if (!node) continue;
    const c = component(node.callFrame.url, node.callFrame.functionName);
    if (c === 'idle') continue;
    counts.set(c, (counts.get(c) ?? 0) + 1);
    total++;
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([c, n]) => ({ component: c, share: n / total }));
}
