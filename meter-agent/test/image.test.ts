/**
 * `meter-agent image` (the built CLI) on an image with Raspberry Pi OS's layout made from scratch
 * without root; read back with mtools: user-data valid per `cloud-init schema`, a unique instance
 * id per device, identity and policy present, and no byte of one device in another's image.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CertificateAuthority } from '@tre/tre-broker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { bootFile, makeFakeDeb, makePiImage } from './support/pi-image.js';

const run = promisify(execFile);
const cli = fileURLToPath(new URL('../bin/meter-agent.js', import.meta.url));
const agentExample = fileURLToPath(new URL('../packaging/agent.example.yaml', import.meta.url));
const neverPolicy = fileURLToPath(new URL('../../hems-policy/examples/never.yaml', import.meta.url));
const hasBmaptool = existsSync('/usr/bin/bmaptool');

let dir = '';
let deb = '';
let base = '';
let regulator = '';
const tokens: Record<string, string> = {};
const keys: Record<string, string> = {};
const PASSPHRASE = 'correct horse battery staple';
const SSH_KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEw9mYtPuw8bEVBz9b3xUB6UBqvZ0TEDEN2FgfJD3b0K admin@laptop';

async function meterAgent(args: string[]) {
  return run(process.execPath, [cli, ...args], { maxBuffer: 16 * 2 ** 20 });
}

const sharedArgs = () => [
  '--deb',
  deb,
  '--agent-config',
  agentExample,
  '--policy',
  neverPolicy,
  '--ca',
  join(regulator, 'ca.crt'),
  '--crl',
  join(regulator, 'crl.pem'),
  '--attestation-policy',
  join(dir, 'attestation-policy.jws'),
  '--enroll-server',
  'https://enroll.example:8443',
  '--ssh-key',
  join(dir, 'admin.pub'),
];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'meter-image-'));
  base = join(dir, 'raspios.img');
  await makePiImage(base);
  deb = await makeFakeDeb(dir);
  regulator = join(dir, 'regulator');
  const { ca } = await CertificateAuthority.init(regulator);
  for (const id of ['m-0003', 'm-0004']) {
    const issued = await ca.issue('meter', id);
    await copyFile(issued.key, join(dir, `${id}.key`));
    await copyFile(issued.cert, join(dir, `${id}.crt`));
    keys[id] = await readFile(issued.key, 'utf8');
  }
  for (const id of ['m-0001', 'm-0002', 'm-0005']) {
    tokens[id] = `tok_${randomBytes(18).toString('base64url')}`;
    await writeFile(join(dir, `${id}.token`), `${tokens[id]}\n`);
  }
  await writeFile(join(dir, 'attestation-policy.jws'), 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln\n');
  await writeFile(join(dir, 'wifi.txt'), `${PASSPHRASE}\n`);
  await writeFile(join(dir, 'admin.pub'), `${SSH_KEY}\n`);
  await mkdir(join(dir, 'apt'));
  await writeFile(
    join(dir, 'apt', 'meter-agent.sources'),
    'Types: deb\nURIs: METER_AGENT_APT_URI\nSuites: trixie\nComponents: main\n',
  );
  await writeFile(join(dir, 'apt', 'meter-agent-archive-keyring.gpg'), 'not really a key');
}, 60_000);
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function schemaValid(userData: Buffer): Promise<void> {
  const f = join(dir, `user-data-${randomBytes(4).toString('hex')}`);
  await writeFile(f, userData);
  const { stdout } = await run('cloud-init', ['schema', '--config-file', f]);
  expect(stdout).toMatch(/Valid (cloud-config|schema)/);
}

describe('meter-agent image --batch', () => {
  it('writes one image per device, each with only its own identity', { timeout: 120_000 }, async () => {
    const csv = [
      'meter,hostname,token_file,key,cert,wifi_ssid,wifi_psk_file,wifi_country',
      'm-0001,,m-0001.token,,,home-1,wifi.txt,nl',
      'm-0002,kitchen-pi,m-0002.token,,,,,',
      'm-0003,,,m-0003.key,m-0003.crt,,,',
    ].join('\n');
    await writeFile(join(dir, 'devices.csv'), `${csv}\n`);
    await run('xz', ['-k', '-T0', '-1', base]);
    const out = join(dir, 'out');
    const args = ['image', '--base', `${base}.xz`, '--batch', join(dir, 'devices.csv'), '--out-dir', out];
    const { stdout, stderr } = await meterAgent([
      ...args,
      ...sharedArgs(),
      '--apt-dir',
      join(dir, 'apt'),
      '--apt-uri',
      'https://apt.example/meter-agent/',
      ...(hasBmaptool ? ['--bmap'] : []),
    ]);
    expect(stderr).toMatch(/copy \(xz -d\): 100% 67\/67 MB, [\d.]+ MB\/s/);
    const meters = ['m-0001', 'm-0002', 'm-0003'];
    const images = meters.map((m) => join(out, `${m}.img`));
    for (const img of images) expect(stdout).toContain(img);
    expect(stderr).not.toContain(tokens['m-0001']);
    expect(stderr + stdout).not.toContain('PRIVATE KEY');

    const instanceIds = new Set<string>();
    for (const [i, img] of images.entries()) {
      const meter = meters[i]!;
      const st = await stat(img);
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.blocks * 512).toBeLessThan(st.size); // sparse: free space is holes
      if (hasBmaptool)
        expect(await readFile(join(out, `${meter}.img.bmap`), 'utf8')).toMatch(/<bmap version=/);
      const userData = (await bootFile(img, 'user-data'))!;
      await schemaValid(userData);
      const ud = parse(userData.toString()) as Record<string, unknown>;
      expect(ud.hostname).toBe(meter === 'm-0002' ? 'kitchen-pi' : `meter-${meter}`);
      expect(ud.timezone).toBe('Europe/Amsterdam');
      expect(ud.runcmd).toEqual([
        ['systemctl', 'enable', '--now', 'ssh'],
        ['sh', '/boot/firmware/meter-agent/first-boot.sh'],
      ]);
      expect((ud.user as { ssh_authorized_keys: string[] }).ssh_authorized_keys).toEqual([SSH_KEY]);
      const md = parse((await bootFile(img, 'meta-data'))!.toString()) as Record<string, string>;
      expect(md['instance-id']).toMatch(/^meter-agent-[0-9a-f]{16}$/);
      expect(md.instance_id).toBe(md['instance-id']);
      instanceIds.add(md['instance-id']!);
      expect(await bootFile(img, 'config.txt')).toBeDefined(); // the image's own files are kept

      const agentYaml = parse((await bootFile(img, 'meter-agent/etc/agent.yaml'))!.toString()) as {
        meterId: string;
      };
      expect(agentYaml.meterId).toBe(meter);
      expect((await bootFile(img, 'meter-agent/etc/policy.yaml'))!.toString()).toBe(
        await readFile(neverPolicy, 'utf8'),
      );
      for (const f of ['ca.crt', 'crl.pem', 'attestation-policy.jws'])
        expect(await bootFile(img, `meter-agent/etc/${f}`), f).toBeDefined();
      expect(
        (await bootFile(img, 'meter-agent/meter-agent_0.1.0_arm64.deb'))!.equals(await readFile(deb)),
      ).toBe(true);
      expect((await bootFile(img, 'meter-agent/first-boot.sh'))!.toString()).toMatch(/^#!\/bin\/sh/);
      expect((await bootFile(img, 'meter-agent/apt/meter-agent.sources'))!.toString()).toContain(
        'URIs: https://apt.example/meter-agent/\n',
      );
      expect(await bootFile(img, 'meter-agent/apt/meter-agent-archive-keyring.gpg')).toBeDefined();
      const conf = (await bootFile(img, 'meter-agent/seed.conf'))!.toString();
      expect(conf).toContain(`METER_ID=${meter}\n`);
      if (meter === 'm-0003') {
        expect(conf).toContain('IDENTITY=preprovisioned\n');
        expect((await bootFile(img, 'meter-agent/device.key'))!.toString()).toBe(keys['m-0003']);
        expect(await bootFile(img, 'meter-agent/etc/device.crt')).toBeDefined();
        expect(await bootFile(img, 'meter-agent/enroll.token')).toBeUndefined();
      } else {
        expect(conf).toContain('IDENTITY=enroll\nENROLL_SERVER=https://enroll.example:8443\n');
        expect((await bootFile(img, 'meter-agent/enroll.token'))!.toString()).toBe(`${tokens[meter]}\n`);
        expect(await bootFile(img, 'meter-agent/device.key')).toBeUndefined();
      }
      const net = parse((await bootFile(img, 'network-config'))!.toString()) as {
        network: { ethernets: unknown; wifis?: { wlan0: Record<string, unknown> } };
      };
      expect(net.network.ethernets).toEqual({ eth0: { dhcp4: true, dhcp6: true, optional: true } });
      if (meter === 'm-0001')
        expect(net.network.wifis!.wlan0).toEqual({
          dhcp4: true,
          'regulatory-domain': 'NL',
          'access-points': { 'home-1': { password: expect.stringMatching(/^[0-9a-f]{64}$/) } },
          optional: true,
        });
      else expect(net.network.wifis).toBeUndefined();
    }
    expect(instanceIds.size).toBe(3);

    // Nothing of one device in another's image: meter ids, tokens, keys, hostnames; no passphrase anywhere.
    const secretsOf: Record<string, string[]> = {
      'm-0001': ['m-0001', tokens['m-0001']!, 'home-1'],
      'm-0002': ['m-0002', tokens['m-0002']!, 'kitchen-pi'],
      'm-0003': ['m-0003', keys['m-0003']!.split('\n')[1]!, keys['m-0003']!.split('\n')[2]!],
    };
    for (const [i, img] of images.entries()) {
      const bytes = await readFile(img);
      expect(bytes.includes(PASSPHRASE)).toBe(false);
      for (const other of meters.filter((m) => m !== meters[i]))
        for (const s of secretsOf[other]!)
          expect(bytes.includes(s), `${other}'s ${s.slice(0, 12)} in ${meters[i]}`).toBe(false);
      for (const s of secretsOf[meters[i]!]!) expect(bytes.includes(s)).toBe(true);
    }
    expect(existsSync(join(out, 'm-0001.img.base.partial'))).toBe(false);
  });

  it('refuses a batch with a key that is not its certificate, before writing anything', async () => {
    await writeFile(join(dir, 'swapped.csv'), 'meter,key,cert\nm-0003,m-0004.key,m-0003.crt\n');
    const out = join(dir, 'out-swapped');
    const err = await meterAgent([
      'image',
      '--base',
      base,
      '--batch',
      join(dir, 'swapped.csv'),
      '--out-dir',
      out,
      ...sharedArgs(),
    ]).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/m-0003: the key is not the certificate's/);
    expect(existsSync(out)).toBe(false);
  });

  it('--shared: one image with nothing of any device, and a private seed per device', {
    timeout: 60_000,
  }, async () => {
    await writeFile(join(dir, 'two.csv'), 'meter,token_file\nm-0001,m-0001.token\nm-0005,m-0005.token\n');
    const out = join(dir, 'out-shared');
    await meterAgent([
      'image',
      '--base',
      base,
      '--batch',
      join(dir, 'two.csv'),
      '--out-dir',
      out,
      '--shared',
      ...sharedArgs(),
    ]);
    const bytes = await readFile(join(out, 'meter-agent.img'));
    for (const s of ['m-0001', 'm-0005', tokens['m-0001']!, tokens['m-0005']!])
      expect(bytes.includes(s)).toBe(false);
    expect(
      await bootFile(join(out, 'meter-agent.img'), 'meter-agent/meter-agent_0.1.0_arm64.deb'),
    ).toBeDefined();
    expect((await bootFile(join(out, 'meter-agent.img'), 'user-data'))!.toString()).toContain(
      'the image stock user-data',
    );
    const seed = join(out, 'seeds', 'm-0005');
    expect((await stat(seed)).mode & 0o777).toBe(0o700);
    expect((await stat(join(seed, 'meter-agent', 'enroll.token'))).mode & 0o777).toBe(0o600);
    expect(await readFile(join(seed, 'meter-agent', 'enroll.token'), 'utf8')).toBe(`${tokens['m-0005']}\n`);
    await schemaValid(await readFile(join(seed, 'user-data')));
  });
});

describe('meter-agent image --imager-json', () => {
  it('writes an .img.xz and a Raspberry Pi Imager OS list (cloudinit-rpi) whose sums match', {
    timeout: 60_000,
  }, async () => {
    const out = join(dir, 'm-0002.img.xz');
    const list = join(dir, 'os_list.json');
    const { stderr } = await meterAgent([
      'image',
      '--base',
      base,
      '--meter',
      'm-0002',
      '--token-file',
      join(dir, 'm-0002.token'),
      '--out',
      out,
      '--imager-json',
      list,
      ...sharedArgs(),
    ]);
    expect(stderr).toMatch(/compress \(xz\): 100% /);
    expect(existsSync(join(dir, 'm-0002.img'))).toBe(false);
    const json = JSON.parse(await readFile(list, 'utf8')) as { os_list: Record<string, unknown>[] };
    const entry = json.os_list[0]!;
    const { stdout: raw } = await run('xz', ['-dc', out], { encoding: 'buffer', maxBuffer: 128 * 2 ** 20 });
    expect(entry).toMatchObject({
      url: `file://${out}`,
      init_format: 'cloudinit-rpi',
      architecture: 'armv8',
      extract_size: raw.length,
      extract_sha256: createHash('sha256').update(raw).digest('hex'),
      image_download_size: (await stat(out)).size,
      image_download_sha256: createHash('sha256')
        .update(await readFile(out))
        .digest('hex'),
    });
    expect(entry.release_date).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    const img = join(dir, 'imager-check.img');
    await writeFile(img, raw);
    // Imager replaces user-data with its own: first boot is started from vendor-data instead.
    expect((await bootFile(img, 'vendor-data'))!.toString()).toMatch(
      /^#!\/bin\/sh\n[\s\S]*exec sh \/boot\/firmware\/meter-agent\/first-boot.sh\n$/,
    );
    const userData = (await bootFile(img, 'user-data'))!;
    await schemaValid(userData);
    expect(parse(userData.toString()).runcmd).toEqual([['systemctl', 'enable', '--now', 'ssh']]);
  });
});
