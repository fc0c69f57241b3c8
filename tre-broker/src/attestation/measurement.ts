/**
 * What the TRE measures into its application PCR, one event per component so that a verifier's
 * refusal names what changed:
 *   workspace <name>            package.json, bin/ and dist/ of each workspace it runs
 *   npm <name>@<version> <dir>  every file of each production dependency (transitively, as
 *                               installed), except native binaries
 *   native <file>               each `.node` binary of those packages, on its own
 *   node binary                 the Node.js executable
 *   shared object <file>        every other executable file mapped into the process
 *                               (/proc/self/maps: libc, tpm2-tss, an LD_PRELOAD library ...)
 *   config <key>=<value>        every option of the effective configuration, clock included
 * The regulator's whitelist (`tre attest-policy`, run on a reference device) lists the same
 * events, computed the same way.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { cp, mkdir, symlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AttestationPolicy, type MeasurementEvent, PROTOCOL_VERSION } from '@tre/protocol';
import { TreConfigError } from '../tre-config-error.js';

/** PCR 23: the application PCR (resettable at locality 0 in the PC Client profile). */
export const APPLICATION_PCR = 23;

/**
 * The boot PCRs a TRE quotes and seals to beside its own: 0-15 (what firmware and boot loader
 * extend), deduplicated and sorted. The one place this range is checked (CLI and core alike).
 */
export function bootPcrsOf(pcrs: readonly number[] = []): number[] {
  for (const p of pcrs)
    if (!Number.isInteger(p) || p < 0 || p > 15)
      throw new TreConfigError(
        `boot PCR ${p}: boot PCRs are 0-15, e.g. 0,1,2,3,4,5,6,7 (PCR ${APPLICATION_PCR} is the TRE's own)`,
      );
  return [...new Set(pcrs)].sort((a, b) => a - b);
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** One measured component: what the event log says and the content digest the PCR is extended with. */
export interface Component {
  description: string;
  contentDigest: string;
  /** For a native module or shared object: its real path (what /proc/self/maps shows once mapped). */
  file?: string;
}

/** Files under `dir` (recursively, sorted), skipping nested `node_modules` and, unless asked, `.node` binaries. */
function filesUnder(dir: string, skip: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
    a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
  )) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') out.push(...filesUnder(path, skip));
    } else if (entry.isFile() && !skip(entry.name)) out.push(path);
  }
  return out;
}

/** SHA-256 over (path relative to `base`, file digest) of `files`, in order. */
function filesDigest(files: string[], base: string): string {
  const h = createHash('sha256');
  for (const file of files) h.update(`${relative(base, file)}\0${sha256(readFileSync(file))}\n`);
  return h.digest('hex');
}

export interface PackageJson {
  name?: string;
  version?: string;
  workspaces?: unknown;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

const readPackageJson = (dir: string) =>
  JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;

/** Where Node would find package `name` from `dir` (node_modules up the tree), resolved through symlinks. */
function resolvePackage(name: string, dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    const candidate = join(d, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate);
    if (dirname(d) === d) return undefined;
  }
}

/** The TRE's package directory (tre-broker/), from this built file's place in it. */
export function treRoot(): string {
  return realpathSync(fileURLToPath(new URL('../..', import.meta.url)));
}

/**
 * The packages the TRE can load: its own and every production dependency, found the way Node
 * resolves them (dependencies and installed optional dependencies, transitively), as real paths
 * with their package.json. The workspace root the paths are shown relative to comes with them.
 */
export function productionPackages(root = treRoot()): { base: string; packages: Map<string, PackageJson> } {
  const packages = new Map<string, PackageJson>();
  const visit = (dir: string) => {
    if (packages.has(dir)) return;
    const pkg = readPackageJson(dir);
    packages.set(dir, pkg);
    for (const name of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      const found = resolvePackage(name, dir);
      if (found) visit(found); // an optional dependency for another platform is not installed
    }
  };
  visit(root);
  return { base: resolveBase(root), packages };
}

/**
 * Copies the release a measurement covers to `to`: the root package.json, each workspace's
 * package.json, bin/ and dist/, every production dependency (without nested node_modules, which
 * are packages of their own), and the @tre/ workspace links. A copy keeps its measurement while the
 * source tree is rebuilt; changing one file in it changes that component's event.
 */
export async function copyRelease(to: string, root = treRoot()): Promise<void> {
  const { base, packages } = productionPackages(root);
  await cp(join(base, 'package.json'), join(to, 'package.json'));
  for (const [pkgDir, pkg] of packages) {
    const target = join(to, relative(base, pkgDir));
    if (pkgDir.split(sep).includes('node_modules')) {
      await cp(pkgDir, target, {
        recursive: true,
        filter: (src) => !src.slice(pkgDir.length).includes('node_modules'),
      });
      continue;
    }
    for (const part of ['package.json', 'bin', 'dist'])
      await cp(join(pkgDir, part), join(target, part), { recursive: true }).catch(() => undefined);
    if (pkg.name?.startsWith('@tre/') && pkg.name !== '@tre/tre-broker') {
      await mkdir(join(to, 'node_modules', '@tre'), { recursive: true });
      await symlink(join('..', '..', relative(base, pkgDir)), join(to, 'node_modules', pkg.name));
    }
  }
}

/**
 * The code components: each workspace (package outside any node_modules: package.json, bin/ and
 * dist/), each npm package (every file but native binaries) and each native binary.
 */
export function codeComponents(root = treRoot()): Component[] {
  const { base, packages } = productionPackages(root);
  const workspaces: Component[] = [];
  const npm: Component[] = [];
  const natives: Component[] = [];
  const dirs = [...packages.keys()].sort((a, b) => (relative(base, a) < relative(base, b) ? -1 : 1));
  for (const dir of dirs) {
    const pkg = packages.get(dir)!;
    if (!dir.split('/').includes('node_modules')) {
      const files = [
        join(dir, 'package.json'),
        ...['bin', 'dist'].flatMap((d) =>
          existsSync(join(dir, d)) ? filesUnder(join(dir, d), () => false) : [],
        ),
      ];
      workspaces.push({ description: `workspace ${pkg.name}`, contentDigest: filesDigest(files, dir) });
      continue;
    }
    npm.push({
      description: `npm ${pkg.name}@${pkg.version} ${relative(base, dir)}`,
      contentDigest: filesDigest(
        filesUnder(dir, (name) => name.endsWith('.node')),
        dir,
      ),
    });
    for (const file of filesUnder(dir, (name) => !name.endsWith('.node')))
      natives.push({
        description: `native ${relative(base, file)}`,
        contentDigest: sha256(readFileSync(file)),
        file: realpathSync(file),
      });
  }
  return [...workspaces, ...npm, ...natives];
}

/** The directory paths are shown relative to: the npm workspace root above `root`, else `root`'s parent. */
function resolveBase(root: string): string {
  for (let d = dirname(root); dirname(d) !== d; d = dirname(d))
    if (existsSync(join(d, 'package.json')) && readPackageJson(d).workspaces) return d;
  return dirname(root);
}

/** Executable files mapped into this process, from /proc/self/maps (sorted, deduplicated). */
export function mappedExecutables(): string[] {
  let maps: string;
  try {
    maps = readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return []; // not Linux: nothing to read (the TRE runs on Linux; tests say so)
  }
  const files = new Set<string>();
  for (const line of maps.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const path = fields.slice(5).join(' ');
    if (fields[1]?.includes('x') && path.startsWith('/') && !path.endsWith('(deleted)')) files.add(path);
  }
  return [...files].sort();
}

/**
 * Shared objects: every executable mapping that is not the Node binary or a native module already
 * measured as part of the code (`measured` holds their real paths).
 */
export function sharedObjectComponents(
  measuredNatives: Set<string>,
  nodeBinary = process.execPath,
): Component[] {
  const node = realpathSync(nodeBinary);
  return mappedExecutables()
    .filter((file) => file !== node && !measuredNatives.has(file))
    .map(sharedObjectComponent);
}

/** One mapped executable file as a measured component. */
export function sharedObjectComponent(file: string): Component {
  return { description: `shared object ${file}`, contentDigest: sha256(readFileSync(file)), file };
}

/** `{a: {b: 1}, c: [1, 2]}` -> `a.b=1`, `c=[1,2]`, sorted: every option as one readable line. */
export function configLines(config: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(config)
    .filter(([, value]) => value !== undefined)
    .flatMap(([key, value]) =>
      value !== null && typeof value === 'object' && !Array.isArray(value)
        ? configLines(value as Record<string, unknown>, `${prefix}${key}.`)
        : [`${prefix}${key}=${JSON.stringify(value)}`],
    )
    .sort();
}

/**
 * The effective configuration as measured: the options given plus how Node was started
 * (`execArgv` and `NODE_OPTIONS` could load unmeasured code with `--require` or `--import`).
 */
export function effectiveConfig(config: Record<string, unknown>): Record<string, unknown> {
  return { ...config, node: { execArgv: process.execArgv, NODE_OPTIONS: process.env.NODE_OPTIONS ?? '' } };
}

/** Everything measured at start, in order: code, Node binary, shared objects, configuration. */
export function measuredComponents(
  config: Record<string, unknown>,
  opts: { root?: string; nodeBinary?: string } = {},
): Component[] {
  const code = codeComponents(opts.root);
  const natives = new Set(code.flatMap((c) => (c.file ? [c.file] : [])));
  const nodeBinary = opts.nodeBinary ?? process.execPath;
  return [
    ...code,
    { description: 'node binary', contentDigest: sha256(readFileSync(nodeBinary)) },
    ...sharedObjectComponents(natives, nodeBinary),
    ...configLines(effectiveConfig(config)).map((line) => ({
      description: `config ${line}`,
      contentDigest: sha256(line),
    })),
  ];
}

/**
 * A component as an event-log entry: FAPI extends a PCR with SHA-256 of the event data, and the
 * event data is the content digest, so each logged (and whitelisted) digest is SHA-256(content digest).
 */
export function eventOf(c: Component): MeasurementEvent {
  return {
    pcr: APPLICATION_PCR,
    digest: createHash('sha256').update(Buffer.from(c.contentDigest, 'hex')).digest('hex'),
    description: c.description,
  };
}

/** The PCR value the events produce from a reset PCR (32 zero bytes). */
export function replayPcr(events: MeasurementEvent[]): string {
  return events
    .reduce(
      (acc, e) =>
        createHash('sha256')
          .update(Buffer.concat([acc, Buffer.from(e.digest, 'hex')]))
          .digest(),
      Buffer.alloc(32),
    )
    .toString('hex');
}

/**
 * The regulator's whitelist for a TRE release and configuration (what `tre attest-policy` signs):
 * the application PCR as the measurements replay, their event digests, and any boot PCR values
 * read from a reference device (boot PCRs as `bootPcrsOf` allows). Measured in this process: run
 * it on a reference device built like the TRE (same image, same TPM interface).
 */
export function attestationPolicyFor(
  config: Record<string, unknown>,
  opts: {
    policyId: string;
    issuedAt?: Date;
    bootPcrValues?: Record<number, string>;
    /** Further accepted application-PCR values (e.g. the release being migrated from). */
    alsoAccept?: string[];
  },
): AttestationPolicy {
  const events = measuredComponents(config).map(eventOf);
  const boot = Object.entries(opts.bootPcrValues ?? {}).map(([pcr, value]) => [Number(pcr), value] as const);
  bootPcrsOf(boot.map(([pcr]) => pcr));
  return {
    v: PROTOCOL_VERSION,
    policyId: opts.policyId,
    issuedAt: (opts.issuedAt ?? new Date()).toISOString(),
    requiredPcrs: [...boot.map(([pcr]) => pcr), APPLICATION_PCR],
    pcrValues: {
      ...Object.fromEntries(boot.map(([pcr, value]) => [String(pcr), [value]])),
      [String(APPLICATION_PCR)]: [replayPcr(events), ...(opts.alsoAccept ?? [])],
    },
    eventDigests: events.map(({ description, digest }) => ({ description, digest })),
  };
}
