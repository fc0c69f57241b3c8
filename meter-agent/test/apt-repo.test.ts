/**
 * The agent's signed apt repository: built by packaging/apt/build-repo.mjs (reprepro + gpg) from
 * arm64, amd64 and "all" .debs, served on loopback, and read by apt-get with the device's shipped
 * files (meter-agent.sources with its Signed-By key alone, meter-agent.pref) in a sandbox that
 * touches none of the machine's apt setup: the signature verifies and the packages arrive
 * byte for byte; a changed InRelease, Release, Packages or .deb, a repository signed by another
 * key, and an unsigned one are refused; another trusted repository's higher meter-agent is pinned
 * out; the unattended-upgrades file leaves exactly the agent's origin allowed.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AptSandbox, aptSandbox } from './support/apt-sandbox.js';
import { type StaticSite, serveDirectory } from './support/static-site.js';
import { stubDeb } from './support/stub-deb.js';

const exec = promisify(execFile);
const aptDir = fileURLToPath(new URL('../packaging/apt/', import.meta.url));
const builder = join(aptDir, 'build-repo.mjs');
const shipped = (name: string) => readFile(join(aptDir, name), 'utf8');
const sha256 = async (path: string) =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

let dir = '';
let site: StaticSite;
const debs: Record<string, string> = {};
let sandboxes = 0;
let key: { home: string; fpr: string };
let other: { home: string; fpr: string };
let built: { stdout: string };
const homes: string[] = [];

async function newKey(name: string): Promise<{ home: string; fpr: string }> {
  const home = join(dir, name);
  homes.push(home);
  const { stdout } = await exec(process.execPath, [builder, '--init-key', '--gnupghome', home]);
  return { home, fpr: stdout.trim() };
}

async function buildRepo(out: string, key: { home: string; fpr: string }, ...extra: string[]) {
  return exec(process.execPath, [
    builder,
    ...extra,
    '--out',
    join(dir, 'site', out),
    '--key-id',
    key.fpr,
    '--gnupghome',
    key.home,
  ]);
}

/** The shipped sources file, pointed at a repository on the test's server and its exported key. */
async function sourcesFor(repo: string, keyringOf = repo): Promise<string> {
  const text = await shipped('meter-agent.sources');
  expect(text).toMatch(/^URIs: METER_AGENT_APT_URI$/m);
  expect(text).toMatch(/^Signed-By: \/usr\/share\/keyrings\/meter-agent-archive-keyring\.gpg$/m);
  return text
    .replace(/^URIs: .*$/m, `URIs: ${site.url}${repo}/`)
    .replace(/^Signed-By: \/usr\/share\/keyrings\//m, `Signed-By: ${join(dir, 'site', keyringOf)}/`);
}

async function sandbox(sources: string): Promise<AptSandbox> {
  sandboxes += 1;
  return aptSandbox(join(dir, `apt-${sandboxes}`), {
    sources,
    preferences: { 'meter-agent.pref': await shipped('meter-agent.pref') },
    foreignArchitectures: ['arm64', 'amd64'],
  });
}

/** A copy of the good repository under another name, changed by `edit`. */
async function variant(name: string, edit: (root: string) => Promise<void>): Promise<void> {
  const root = join(dir, 'site', name);
  await cp(join(dir, 'site', 'good'), root, { recursive: true, verbatimSymlinks: true });
  await edit(root);
}

async function flipByte(path: string, find: string, replace: string): Promise<void> {
  const text = await readFile(path, 'latin1');
  expect(text).toContain(find);
  await writeFile(path, text.replace(find, replace), 'latin1');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'apt-repo-'));
  await mkdir(join(dir, 'debs'));
  await mkdir(join(dir, 'other-debs'));
  for (const arch of ['arm64', 'amd64'])
    debs[arch] = await stubDeb(join(dir, 'debs'), { name: 'meter-agent', version: '0.1.0', arch });
  debs.all = await stubDeb(join(dir, 'debs'), { name: 'meter-agent-doc', version: '0.1.0', arch: 'all' });
  for (const arch of ['arm64', 'amd64'])
    await stubDeb(join(dir, 'other-debs'), { name: 'meter-agent', version: '9.9.9', arch });
  key = await newKey('gnupg-release');
  other = await newKey('gnupg-other');
  built = await buildRepo('good', key, '--debs', join(dir, 'debs'));
  site = await serveDirectory(join(dir, 'site'));
}, 60_000);

afterAll(async () => {
  await site?.close();
  for (const home of homes)
    await exec('gpgconf', ['--kill', 'gpg-agent'], { env: { ...process.env, GNUPGHOME: home } }).catch(
      () => undefined,
    );
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('signed apt repository', () => {
  it('build-repo.mjs --help names every option', async () => {
    const { stdout } = await exec(process.execPath, [builder, '--help']);
    for (const o of [
      '--debs',
      '--out',
      '--key-id',
      '--gnupghome',
      '--origin',
      '--label',
      '--suite',
      '--codename',
    ])
      expect(stdout).toContain(o);
    expect(stdout).toContain('--init-key');
    const missing = await exec(process.execPath, [builder, '--out', join(dir, 'x')]).catch((e) => e);
    expect(missing).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/--debs, --out and --key-id are required/),
    });
  });

  it('is built, signed and read by apt-get with only its own key; refusals for every change', {
    timeout: 60_000,
  }, async () => {
    expect(built.stdout).toContain(`signed by ${key.fpr}`);
    expect(built.stdout).toMatch(/trixie\|main\|arm64: meter-agent 0\.1\.0/);
    expect(built.stdout).toMatch(/trixie\|main\|amd64: meter-agent-doc 0\.1\.0/);
    const good = join(dir, 'site', 'good');
    const release = await readFile(join(good, 'dists', 'trixie', 'Release'), 'utf8');
    expect(release).toMatch(/^Origin: meter-agent$/m);
    expect(release).toMatch(/^Label: meter-agent$/m);
    expect(release).toMatch(/^Suite: stable$/m);
    expect(release).toMatch(/^Codename: trixie$/m);
    expect(release).toMatch(/^Architectures: amd64 arm64$/m);
    await readFile(join(good, 'dists', 'trixie', 'Release.gpg')); // detached signature, for Release alone
    expect(release).not.toMatch(/^Valid-Until:/m);
    await buildRepo('expiring', key, '--debs', debs.all!, '--valid-for', '7d');
    const expiring = await readFile(join(dir, 'site', 'expiring', 'dists', 'trixie', 'Release'), 'utf8');
    const [, date, until] = expiring.match(/^Date: (.*)\nValid-Until: (.*)$/m) ?? [];
    expect(Date.parse(until!) - Date.parse(date!)).toBe(7 * 86_400_000);
    // Building again, from single files, with the same .debs changes nothing and signs again.
    await buildRepo('good', key, '--debs', debs.arm64!, '--debs', debs.amd64!);

    // The same packages signed by a key the device does not have, and a trusted repository of
    // someone else's carrying a "newer" meter-agent.
    await buildRepo('other-key', other, '--debs', join(dir, 'debs'));
    await buildRepo(
      'other-origin',
      other,
      '--debs',
      join(dir, 'other-debs'),
      '--origin',
      'other',
      '--label',
      'other',
    );
    await variant('changed-inrelease', (r) =>
      flipByte(join(r, 'dists/trixie/InRelease'), 'Label: meter-agent', 'Label: meter-agenT'),
    );
    await variant('changed-release', async (r) => {
      await rm(join(r, 'dists/trixie/InRelease')); // apt falls back to Release + Release.gpg
      await flipByte(join(r, 'dists/trixie/Release'), 'Label: meter-agent', 'Label: meter-agenT');
    });
    await variant('changed-packages', (r) =>
      Promise.all(
        ['binary-amd64', 'binary-arm64'].map(async (b) => {
          await flipByte(join(r, 'dists/trixie/main', b, 'Packages'), 'Version: 0.1.0', 'Version: 0.1.1');
          await rm(join(r, 'dists/trixie/main', b, 'Packages.gz'));
        }),
      ).then(() => undefined),
    );
    await variant('changed-deb', async (r) => {
      for (const arch of ['amd64', 'arm64']) {
        const deb = join(r, 'pool/main/m/meter-agent', `meter-agent_0.1.0_${arch}.deb`);
        const bytes = await readFile(deb);
        bytes[bytes.length - 1] ^= 1;
        await writeFile(deb, bytes);
      }
    });
    await variant('unsigned', async (r) => {
      await rm(join(r, 'dists/trixie/InRelease'));
      await rm(join(r, 'dists/trixie/Release.gpg'));
    });

    // The good repository: signature checked against meter-agent-archive-keyring.gpg alone.
    const apt = await sandbox(await sourcesFor('good'));
    const update = await apt.run('apt-get', ['update', '--error-on=any']);
    expect(update, update.output).toMatchObject({ code: 0 });
    expect(site.requests).toContain('/good/dists/trixie/InRelease');
    const dl = join(apt.dir, 'download');
    await mkdir(dl);
    const got = await apt.run(
      'apt-get',
      ['download', 'meter-agent:arm64', 'meter-agent:amd64', 'meter-agent-doc'],
      dl,
    );
    expect(got, got.output).toMatchObject({ code: 0 });
    for (const [arch, deb] of Object.entries(debs))
      expect(await sha256(join(dl, `meter-agent${arch === 'all' ? '-doc' : ''}_0.1.0_${arch}.deb`))).toBe(
        await sha256(deb),
      );

    const refused: [string, RegExp][] = [
      ['other-key', /NO_PUBKEY|not signed|signatures couldn't be verified/],
      ['changed-inrelease', /BADSIG|signatures were invalid/],
      ['changed-release', /BADSIG|signatures were invalid/],
      ['changed-packages', /Hash Sum mismatch|unexpected size/],
      ['unsigned', /is not signed/],
    ];
    for (const [repo, why] of refused) {
      const a = await sandbox(await sourcesFor(repo, 'good'));
      const u = await a.run('apt-get', ['update', '--error-on=any']);
      expect(u.code, `${repo}: ${u.output}`).not.toBe(0);
      expect(u.output, repo).toMatch(why);
      const d = await a.run('apt-get', ['download', 'meter-agent'], a.dir);
      expect(d.code, `${repo}: ${d.output}`).not.toBe(0); // nothing from it was believed
      expect(d.output).toMatch(/Unable to locate package meter-agent|has no installation candidate/);
    }
    // A changed .deb: the indices verify, the package itself does not.
    const changedDeb = await sandbox(await sourcesFor('changed-deb', 'good'));
    expect((await changedDeb.run('apt-get', ['update', '--error-on=any'])).code).toBe(0);
    const bad = await changedDeb.run('apt-get', ['download', 'meter-agent'], changedDeb.dir);
    expect(bad.code, bad.output).not.toBe(0);
    expect(bad.output).toMatch(/Hash Sum mismatch|Hashes of expected file/);

    // Another repository, trusted for itself, offering meter-agent 9.9.9: the pin keeps 0.1.0.
    const both = await sandbox(`${await sourcesFor('good')}\n${await sourcesFor('other-origin')}`);
    expect((await both.run('apt-get', ['update', '--error-on=any'])).code).toBe(0);
    const policy = await both.run('apt-cache', ['policy', 'meter-agent:arm64', 'meter-agent:amd64']);
    expect(policy.output.match(/Candidate: 0\.1\.0/g), policy.output).toHaveLength(2);
    expect(policy.output).toMatch(/9\.9\.9 -1\n/);
    expect(policy.output).toMatch(/0\.1\.0 990\n/);
    const dl2 = join(both.dir, 'download');
    await mkdir(dl2);
    expect((await both.run('apt-get', ['download', 'meter-agent:arm64'], dl2)).code).toBe(0);
    expect(await sha256(join(dl2, 'meter-agent_0.1.0_arm64.deb'))).toBe(await sha256(debs.arm64!));
  });

  it("unattended-upgrades is left with the agent's origin alone, as the Release names it", async () => {
    const ours = await shipped('52meter-agent-unattended-upgrades');
    const apt = await aptSandbox(join(dir, 'apt-uu'), {
      sources: '',
      confParts: {
        // What Debian's unattended-upgrades package installs before ours (abridged).
        '50unattended-upgrades': [
          'Unattended-Upgrade::Origins-Pattern {',
          '  "origin=Debian,codename=trixie,label=Debian";',
          '  "origin=Debian,codename=trixie,label=Debian-Security";',
          '};',
          'Unattended-Upgrade::Allowed-Origins { "Debian:stable"; };',
          '',
        ].join('\n'),
        '52meter-agent-unattended-upgrades': ours,
      },
    });
    const dump = (await apt.run('apt-config', ['dump'])).output;
    const patterns = [...dump.matchAll(/^Unattended-Upgrade::Origins-Pattern:: "(.*)";$/gm)].map((m) => m[1]);
    expect(patterns).toEqual(['origin=meter-agent,label=meter-agent']);
    expect(dump).not.toMatch(/^Unattended-Upgrade::Allowed-Origins:: /m);
    expect(dump).toMatch(/^APT::Periodic::Update-Package-Lists "1";$/m);
    expect(dump).toMatch(/^APT::Periodic::Unattended-Upgrade "1";$/m);
    // The pattern's fields are the ones build-repo.mjs signs into the Release by default, and the
    // pin names the same.
    const release = await readFile(join(dir, 'site', 'good', 'dists', 'trixie', 'Release'), 'utf8');
    const field = (f: string) => release.match(new RegExp(`^${f}: (.*)$`, 'm'))?.[1];
    expect(patterns[0]).toBe(`origin=${field('Origin')},label=${field('Label')}`);
    expect(await shipped('meter-agent.pref')).toContain(
      `Pin: release o=${field('Origin')},l=${field('Label')}`,
    );
  });
});
