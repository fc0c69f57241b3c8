/**
 * packaging/first-boot.sh against a scratch root (ROOT=...), its programs (apt-get, dpkg-query,
 * meter-agent, systemctl) recorded by a stand-in given as IN_ROOT: owners and modes, the exact
 * enrollment command, secrets gone from the seed, and a second run changing nothing. (Inside a
 * real Debian arm64 chroot the same script runs with IN_ROOT unset.)
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DeviceSeed, deviceSeedFiles, sharedSeedFiles } from '../src/boot-seed.js';
import { writeSeedDir } from '../src/disk-image.js';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../packaging/first-boot.sh', import.meta.url));
const uid = process.getuid!();
const gid = process.getgid!();
let dir = '';
afterAll(async () => rm(dir, { recursive: true, force: true }));
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'first-boot-'));
});

// The target's programs: logs each call; dpkg-query knows what apt-get installed; enroll writes the key and certificate.
const STUB = `#!/bin/sh
echo "$*" >> "$ROOT/calls.log"
case "$1" in
  apt-get) [ "$2" = install ] && echo "$*" > "$ROOT/installed" ;;
  dpkg-query) [ -f "$ROOT/installed" ] && grep -q "$5" "$ROOT/installed" && { [ "$5" = meter-agent ] && printf 0.1.0 || printf 'install ok installed'; } ;;
  meter-agent) echo key > "$ROOT/etc/meter-agent/device.key"; echo cert > "$ROOT/etc/meter-agent/device.crt" ;;
esac
exit 0
`;

async function makeRoot(name: string, identity: DeviceSeed['identity'], apt: boolean): Promise<string> {
  const root = join(dir, name);
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(
    join(root, 'etc', 'passwd'),
    `root:x:0:0::/root:/bin/sh\nmeter-agent:x:${uid}:${gid}::/var/lib/meter-agent:/usr/sbin/nologin\n`,
  );
  await writeFile(join(root, 'etc', 'group'), `root:x:0:\nmeter-agent:x:${gid}:\n`);
  await writeFile(join(dir, 'deb'), 'deb');
  const seed: DeviceSeed = {
    meterId: 'm-0001',
    hostname: 'meter-m-0001',
    timeZone: 'Europe/Amsterdam',
    instanceId: 'meter-agent-0123456789abcdef',
    agentYaml: 'meterId: m-0001\n',
    policy: { name: 'policy.yaml', content: Buffer.from('version: 1\n') },
    identity,
    imagerCompatible: false,
  };
  const files = [
    ...sharedSeedFiles({
      deb: { name: 'meter-agent_0.1.0_arm64.deb', file: join(dir, 'deb') },
      firstBootScript: script,
      ca: Buffer.from('CA'),
      crl: Buffer.from('CRL'),
      attestationPolicy: Buffer.from('JWS'),
      apt: apt ? [{ name: 'meter-agent.sources', content: Buffer.from('Types: deb\n') }] : [],
    }),
    ...deviceSeedFiles(seed),
  ];
  await mkdir(join(root, 'boot', 'firmware'), { recursive: true });
  await writeSeedDir(join(root, 'boot', 'firmware'), files);
  await writeFile(join(root, 'in-root.sh'), STUB);
  await chmod(join(root, 'in-root.sh'), 0o755);
  return root;
}

async function firstBoot(root: string) {
  return run('sh', [join(root, 'boot/firmware/meter-agent/first-boot.sh')], {
    env: { PATH: process.env.PATH, ROOT: root, IN_ROOT: join(root, 'in-root.sh') },
  });
}
const mode = async (p: string) => {
  const s = await stat(p);
  return { mode: (s.mode & 0o777).toString(8), uid: s.uid, gid: s.gid };
};

describe('first-boot.sh', () => {
  it('zero-touch: installs, enrolls with exactly the agreed command, erases the token; again: no change', async () => {
    const root = await makeRoot(
      'enroll',
      { mode: 'enroll', server: 'https://enroll.example:8443', token: Buffer.from('tok\n') },
      true,
    );
    const { stdout } = await firstBoot(root);
    expect(stdout).toContain('meter m-0001 installed');
    expect(stdout).not.toContain('tok');
    const calls = (await readFile(join(root, 'calls.log'), 'utf8')).split('\n');
    expect(calls).toContain(
      'apt-get install -y /boot/firmware/meter-agent/meter-agent_0.1.0_arm64.deb unattended-upgrades',
    );
    expect(calls).toContain(
      'meter-agent provision enroll --server https://enroll.example:8443 --token-file /boot/firmware/meter-agent/enroll.token --meter m-0001 --key /etc/meter-agent/device.key --cert /etc/meter-agent/device.crt --ca /etc/meter-agent/ca.crt',
    );
    expect(calls).toContain('systemctl enable meter-agent.service');
    const etc = join(root, 'etc', 'meter-agent');
    expect(await mode(etc)).toEqual({ mode: '750', uid: 0, gid });
    expect(await mode(join(etc, 'agent.yaml'))).toEqual({ mode: '640', uid: 0, gid });
    expect(await mode(join(etc, 'policy.yaml'))).toEqual({ mode: '640', uid: 0, gid });
    expect(await mode(join(etc, 'ca.crt'))).toEqual({ mode: '644', uid: 0, gid });
    expect(await mode(join(etc, 'crl.pem'))).toEqual({ mode: '644', uid: 0, gid });
    expect(await mode(join(etc, 'attestation-policy.jws'))).toEqual({ mode: '644', uid: 0, gid });
    expect(await mode(join(etc, 'device.key'))).toEqual({ mode: '600', uid, gid });
    expect(await mode(join(etc, 'device.crt'))).toEqual({ mode: '644', uid: 0, gid });
    expect(await mode(join(root, 'etc/apt/sources.list.d/meter-agent.sources'))).toEqual({
      mode: '644',
      uid: 0,
      gid: 0,
    });
    expect(existsSync(join(root, 'boot/firmware/meter-agent/enroll.token'))).toBe(false);

    await writeFile(join(root, 'calls.log'), '');
    await firstBoot(root);
    const again = (await readFile(join(root, 'calls.log'), 'utf8')).split('\n');
    expect(again.filter((c) => /^(apt-get|meter-agent) /.test(c))).toEqual([]);
    expect(again).toContain('systemctl enable meter-agent.service');
  });

  it('pre-provisioned: the key goes to /etc/meter-agent 0600 for meter-agent and is erased from the card', async () => {
    const root = await makeRoot(
      'pre',
      { mode: 'preprovisioned', key: Buffer.from('KEY\n'), cert: Buffer.from('CERT\n') },
      false,
    );
    await firstBoot(root);
    const etc = join(root, 'etc', 'meter-agent');
    expect(await readFile(join(etc, 'device.key'), 'utf8')).toBe('KEY\n');
    expect(await mode(join(etc, 'device.key'))).toEqual({ mode: '600', uid, gid });
    expect(await mode(join(etc, 'device.crt'))).toEqual({ mode: '644', uid: 0, gid });
    expect(existsSync(join(root, 'boot/firmware/meter-agent/device.key'))).toBe(false);
    const calls = await readFile(join(root, 'calls.log'), 'utf8');
    expect(calls).toContain('apt-get install -y /boot/firmware/meter-agent/meter-agent_0.1.0_arm64.deb\n');
    expect(calls).not.toContain('provision enroll');
    await firstBoot(root); // the key is already in place: still fine
  });

  it('refuses a card without a seed', async () => {
    const root = join(dir, 'empty');
    await mkdir(root, { recursive: true });
    const err = await run('sh', [script], {
      env: { PATH: process.env.PATH, ROOT: root, IN_ROOT: 'false' },
    }).catch((e: { code: number; stderr: string }) => e);
    expect(err).toMatchObject({ code: 1, stderr: expect.stringMatching(/seed.conf is missing/) });
  });
});
