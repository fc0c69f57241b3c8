#!/usr/bin/env node
/**
 * Builds (or adds to) the meter agent's signed apt repository with Debian's reprepro:
 *   node meter-agent/packaging/apt/build-repo.mjs --debs DIR|FILE [--debs ...] --out REPO --key-id KEY
 *        [--gnupghome DIR] [--origin meter-agent] [--label meter-agent] [--suite stable]
 *        [--codename trixie] [--component main] [--architectures arm64,amd64] [--valid-for 30d]
 *   node meter-agent/packaging/apt/build-repo.mjs --init-key --gnupghome DIR [--name "..."]
 * REPO holds reprepro's state (conf/, db/: keep them, the next release adds to them) and what is
 * published (dists/, pool/, meter-agent-archive-keyring.gpg): serve REPO over HTTP(S) as it is, or
 * copy those three out. dists/CODENAME/InRelease and Release.gpg are signed with KEY; the public
 * key is exported as REPO/meter-agent-archive-keyring.gpg, the file devices install as
 * /usr/share/keyrings/meter-agent-archive-keyring.gpg. Architecture "all" packages go into every
 * architecture. With --valid-for the Release carries a Valid-Until that far ahead: devices then
 * refuse a repository not re-signed in time (a mirror replaying an old release), so run the command
 * again (no new .debs needed) before it runs out. A version already in the repository with other
 * contents is refused: give a new release a new version. `--init-key` makes a passphrase-less
 * signing key for development in GNUPGHOME and prints its fingerprint.
 * The defaults are the names the device's files (meter-agent.sources, meter-agent.pref,
 * 52meter-agent-unattended-upgrades) expect. Needs reprepro and gnupg (`scripts/setup.sh test`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

/** The names the device's files (meter-agent.sources, 52meter-agent-unattended-upgrades, meter-agent.pref) expect. */
const defaults = {
  origin: 'meter-agent',
  label: 'meter-agent',
  suite: 'stable',
  codename: 'trixie',
  component: 'main',
  architectures: 'arm64,amd64',
  name: 'meter-agent archive signing key (development) <dev@tre-stack.invalid>',
};
const KEYRING = 'meter-agent-archive-keyring.gpg';

const usage = `Builds or extends the meter agent's signed apt repository (reprepro + gpg).

  build-repo.mjs --debs DIR|FILE [--debs ...] --out REPO --key-id KEY [--gnupghome DIR]
                 [--origin ${defaults.origin}] [--label ${defaults.label}] [--suite ${defaults.suite}]
                 [--codename ${defaults.codename}] [--component ${defaults.component}] [--architectures ${defaults.architectures}]
                 [--valid-for 30d]
  build-repo.mjs --init-key --gnupghome DIR [--name "${defaults.name}"]

  --debs           .deb files, or directories of them (repeat, or separate with commas)
  --out            the repository directory: publish its dists/, pool/ and ${KEYRING};
                   keep its conf/ and db/ for the next release
  --key-id         the signing key (fingerprint, id or user id) in GNUPGHOME
  --gnupghome      the keyring holding it (default: $GNUPGHOME or ~/.gnupg)
  --origin, --label, --suite, --codename, --component
                   the Release fields; the device's files expect the defaults
  --architectures  always listed, besides those of the .debs ("all" goes into every one)
  --valid-for      Valid-Until this far ahead (reprepro's ValidFor, e.g. 30d): re-run before then
  --init-key       make a passphrase-less ed25519 signing key (development) and print its fingerprint`;

let parsed;
try {
  parsed = parseArgs({
    options: {
      debs: { type: 'string', multiple: true },
      out: { type: 'string' },
      'key-id': { type: 'string' },
      gnupghome: { type: 'string' },
      origin: { type: 'string', default: defaults.origin },
      label: { type: 'string', default: defaults.label },
      suite: { type: 'string', default: defaults.suite },
      codename: { type: 'string', default: defaults.codename },
      component: { type: 'string', default: defaults.component },
      architectures: { type: 'string', default: defaults.architectures },
      'valid-for': { type: 'string' },
      'init-key': { type: 'boolean', default: false },
      name: { type: 'string', default: defaults.name },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
} catch (err) {
  fail(`${err.message}\n${usage}`);
}
const opts = parsed.values;

function fail(message) {
  console.error(`build-repo: ${message}`);
  process.exit(2);
}

const env = { ...process.env };
if (opts.gnupghome) env.GNUPGHOME = resolve(opts.gnupghome);

function run(cmd, args, extra = {}) {
  try {
    return execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...extra });
  } catch (err) {
    if (err.code === 'ENOENT') fail(`${cmd} is not installed: run scripts/setup.sh test`);
    fail(`${cmd} ${args.join(' ')} failed:\n${err.stderr || err.message}`);
  }
}

/** The signing key's fingerprint; exits when the key or its secret part is not in the keyring. */
function fingerprint(keyId) {
  const out = run('gpg', ['--batch', '--with-colons', '--list-secret-keys', keyId]);
  const fpr = out.split('\n').find((l) => l.startsWith('fpr:'));
  if (!fpr) fail(`no secret key ${keyId} in ${env.GNUPGHOME ?? '~/.gnupg'}`);
  return fpr.split(':')[9];
}

function initKey() {
  if (!opts.gnupghome) fail('--init-key needs --gnupghome DIR (a development keyring, not your own)');
  mkdirSync(env.GNUPGHOME, { recursive: true, mode: 0o700 });
  run('gpg', [
    '--batch',
    '--pinentry-mode',
    'loopback',
    '--passphrase',
    '',
    '--quick-generate-key',
    opts.name,
    'ed25519',
    'sign',
    '2y',
  ]);
  const out = run('gpg', ['--batch', '--with-colons', '--list-secret-keys', opts.name]);
  const fprs = out.split('\n').filter((l) => l.startsWith('fpr:'));
  console.log(fprs.at(-1).split(':')[9]); // the newest key with that name
}

/** Every .deb named, a directory standing for the .deb files directly in it. */
function debFiles(paths) {
  const files = [];
  for (const p of paths.flatMap((p) => p.split(','))) {
    const path = resolve(p);
    if (!existsSync(path)) fail(`${p} does not exist`);
    if (statSync(path).isDirectory())
      files.push(
        ...readdirSync(path)
          .filter((n) => n.endsWith('.deb'))
          .sort()
          .map((n) => join(path, n)),
      );
    else if (path.endsWith('.deb')) files.push(path);
    else fail(`${p} is not a .deb`);
  }
  if (files.length === 0) fail(`no .deb files in ${paths.join(', ')}`);
  return files;
}

function distributions(architectures, fpr) {
  return [
    `Origin: ${opts.origin}`,
    `Label: ${opts.label}`,
    `Suite: ${opts.suite}`,
    `Codename: ${opts.codename}`,
    `Architectures: ${architectures.join(' ')}`,
    `Components: ${opts.component}`,
    `Description: ${opts.label} releases`,
    ...(opts['valid-for'] ? [`ValidFor: ${opts['valid-for']}`] : []),
    `SignWith: ${fpr}`,
    '',
  ].join('\n');
}

function buildRepo() {
  if (!opts.debs?.length || !opts.out || !opts['key-id'])
    fail(`--debs, --out and --key-id are required\n${usage}`);
  const out = resolve(opts.out);
  const debs = debFiles(opts.debs);
  const fpr = fingerprint(opts['key-id']);
  const architectures = new Set(opts.architectures.split(',').filter(Boolean));
  for (const deb of debs) {
    const arch = run('dpkg-deb', ['-f', deb, 'Architecture']).trim();
    if (arch !== 'all') architectures.add(arch);
  }
  mkdirSync(join(out, 'conf'), { recursive: true });
  writeFileSync(join(out, 'conf', 'distributions'), distributions([...architectures].sort(), fpr));
  writeFileSync(join(out, 'conf', 'options'), 'verbose\n');
  // --export=never: export (and sign) once at the end, after every package is in.
  const reprepro = ['--basedir', out];
  run('reprepro', [
    ...reprepro,
    '--component',
    opts.component,
    '--export=never',
    'includedeb',
    opts.codename,
    ...debs,
  ]);
  run('reprepro', [...reprepro, 'export', opts.codename]);
  run('reprepro', [...reprepro, 'createsymlinks', opts.codename]);
  const keyring = join(out, KEYRING);
  writeFileSync(keyring, run('gpg', ['--batch', '--export', fpr], { encoding: 'buffer' }));
  // Check what a device will check: the InRelease signature against the exported key alone.
  run('gpgv', ['--keyring', keyring, join(out, 'dists', opts.codename, 'InRelease')]);
  const listing = run('reprepro', [...reprepro, 'list', opts.codename]).trim();
  console.log(`${out}: ${opts.codename} (${opts.suite}) signed by ${fpr}\n${listing}\nkeyring: ${keyring}`);
}

if (opts.help) console.log(usage);
else if (opts['init-key']) initKey();
else buildRepo();
