/**
 * The architecture, checked on every `npm test` (`npm run arch`): which workspace may import which,
 * no import cycles, no src/ importing test/.
 *
 * Workspaces in layers; a workspace's src/ imports only the layers below it:
 *   protocol, hardware                  (import no other workspace)
 *   hems-policy                         protocol, hardware
 *   tre-broker, meter-agent             the layers below (meter-agent: also hems-policy)
 *   sim                                 everything but bench
 *   bench                               everything
 * Tests may in addition import the workspace on the other side of the wire (their peer in the same
 * layer: hardware <-> protocol, meter-agent <-> tre-broker), including its test/support/.
 *
 * `@tre/<name>` resolves through tsconfig.check.json's paths to `<name>/src/index.ts` (the source,
 * not dist/), so the rules see workspace imports whether or not anything is built.
 */

/** The workspaces a workspace's src/ may import, besides itself. */
const mayImport = {
  protocol: [],
  hardware: [],
  'hems-policy': ['protocol', 'hardware'],
  'tre-broker': ['protocol', 'hardware'],
  'meter-agent': ['protocol', 'hardware', 'hems-policy'],
  sim: ['protocol', 'hardware', 'hems-policy', 'tre-broker', 'meter-agent'],
  bench: ['protocol', 'hardware', 'hems-policy', 'tre-broker', 'meter-agent', 'sim'],
};

/** The workspace a workspace's tests also talk to: the other side of the wire. */
const testPeers = {
  protocol: ['hardware'],
  hardware: ['protocol'],
  'tre-broker': ['meter-agent'],
  'meter-agent': ['tre-broker'],
};

const workspaces = Object.keys(mayImport);
const anyOf = (names) => `^(${names.join('|')})/`;

const layerRules = workspaces.flatMap((w) => {
  const others = (allowed) => workspaces.filter((o) => o !== w && !allowed.includes(o));
  const forSrc = others(mayImport[w]);
  const forTest = others([...mayImport[w], ...(testPeers[w] ?? [])]);
  const allowedText = (names) => (names.length ? names.join(', ') : 'no other workspace');
  return [
    forSrc.length && {
      name: `${w}-src-layer`,
      comment: `${w}/src imports ${allowedText(mayImport[w])}`,
      severity: 'error',
      from: { path: `^${w}/src/` },
      to: { path: anyOf(forSrc) },
    },
    forTest.length && {
      name: `${w}-test-layer`,
      comment: `${w}/test imports ${allowedText([...mayImport[w], ...(testPeers[w] ?? [])])}`,
      severity: 'error',
      from: { path: `^${w}/test/` },
      to: { path: anyOf(forTest) },
    },
  ].filter(Boolean);
});

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'no import cycles (type-only imports included)',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-src-importing-test',
      comment: 'shipped code never imports test code',
      severity: 'error',
      from: { path: '^[^/]+/src/' },
      to: { path: '^[^/]+/test/' },
    },
    {
      name: 'test-imports-only-test-support-of-others',
      comment: "a test may use another workspace's test/support/, not its tests",
      severity: 'error',
      from: { path: '^([^/]+)/test/' },
      to: { path: '^[^/]+/test/', pathNot: ['^$1/test/', '^[^/]+/test/support/'] },
    },
    {
      name: 'workspace-resolves',
      comment: '@tre/<name> must resolve (to <name>/src), or the layer rules would not see it',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true, path: '^@tre/' },
    },
    {
      name: 'workspace-by-package-name',
      comment:
        "another workspace's src/ is imported as @tre/<name> (its public surface), not by a relative path",
      severity: 'error',
      from: { path: '^([^/]+)/' },
      to: { path: '^[^/]+/src/', pathNot: '^$1/src/', dependencyTypesNot: ['aliased'] },
    },
    ...layerRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.check.json' },
  },
};
