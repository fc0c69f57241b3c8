/**
 * `meter-agent image`: per-device Raspberry Pi OS images (or one shared image and per-device boot
 * seeds) from a downloaded Raspberry Pi OS Lite arm64 image, made offline and without root. Reads
 * and checks every device's files before writing anything; the seed itself is `boot-seed.ts`,
 * the image I/O `disk-image.ts`.
 */
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { isTimeZone, parsePolicy } from '@tre/hems-policy';
import { formatIdentity } from '@tre/protocol';
import { parseDocument } from 'yaml';
import { agentConfigSchema, parseYamlWith } from './agent-config.js';
import {
  APT_FILES,
  checkInstalledPaths,
  type DeviceIdentity,
  type DeviceSeed,
  defaultHostname,
  deviceSeedFiles,
  SeedError,
  type SharedSeed,
  sharedSeedFiles,
  wifiPsk,
} from './boot-seed.js';
import {
  checkPiBoot,
  compressXz,
  copySparse,
  createBmap,
  debFields,
  fatAt,
  readLayout,
  sha256File,
  writeFat,
  writeSeedDir,
} from './disk-image.js';
import { type ImagerImage, imagerOsList } from './imager-os-list.js';

/** One device as the command line (or a batch row merged with it) gives it: file paths, not contents. */
export interface DeviceInput {
  meterId: string;
  hostname?: string;
  agentConfig?: string;
  policy?: string;
  key?: string;
  cert?: string;
  enrollServer?: string;
  tokenFile?: string;
  wifiSsid?: string;
  wifiPskFile?: string;
  wifiCountry?: string;
  sshKey?: string;
  sshUser: string;
  timeZone?: string;
}

export interface SharedInput {
  deb: string;
  firstBootScript: string;
  ca: string;
  crl: string;
  attestationPolicy: string;
  aptDir?: string;
  /** The repository's address, for METER_AGENT_APT_URI in meter-agent.sources. */
  aptUri?: string;
  /** The repository's public key (build-repo.mjs exports it); default: the one in aptDir. */
  aptKeyring?: string;
}

const need = (value: string | undefined, what: string, meterId: string): string => {
  if (!value) throw new SeedError(`${meterId}: ${what} is required`);
  return value;
};
const readText = async (file: string, what: string) => {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new SeedError(`${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
};

/** The regulator's root, CRL and whitelist, the package, the apt repository files: what every device shares. */
export async function loadSharedSeed(s: SharedInput): Promise<SharedSeed> {
  const deb = await debFields(s.deb);
  if (deb.name !== 'meter-agent' || deb.arch !== 'arm64')
    throw new SeedError(
      `${s.deb}: is ${deb.name || '?'} for ${deb.arch || '?'}; the Pi needs the meter-agent arm64 package (build-deb.mjs --arch arm64)`,
    );
  const apt: SharedSeed['apt'] = [];
  if (s.aptDir) {
    const names = await readdir(s.aptDir);
    if (!names.includes('meter-agent.sources'))
      throw new SeedError(`--apt-dir ${s.aptDir}: has no meter-agent.sources (packaging/apt/ makes it)`);
    for (const name of APT_FILES) {
      const file =
        name === 'meter-agent-archive-keyring.gpg' && s.aptKeyring ? s.aptKeyring : join(s.aptDir, name);
      if (!existsSync(file)) continue;
      let content = await readFile(file);
      if (name === 'meter-agent.sources' && content.includes('METER_AGENT_APT_URI')) {
        if (!s.aptUri || !/^https?:\/\/\S+\/$/.test(s.aptUri))
          throw new SeedError(
            'meter-agent.sources needs the repository address: --apt-uri https://.../ (ending in /)',
          );
        content = Buffer.from(content.toString().replaceAll('METER_AGENT_APT_URI', s.aptUri));
      }
      apt.push({ name, content });
    }
    if (!apt.some((f) => f.name === 'meter-agent-archive-keyring.gpg'))
      throw new SeedError(
        `--apt-dir ${s.aptDir}: no meter-agent-archive-keyring.gpg: give the repository's key, --apt-keyring REPO/meter-agent-archive-keyring.gpg`,
      );
  } else if (s.aptUri || s.aptKeyring) throw new SeedError('--apt-uri and --apt-keyring go with --apt-dir');
  const ca = await readText(s.ca, '--ca');
  new X509Certificate(ca); // a PEM certificate, or this throws
  return {
    deb: { name: `meter-agent_${deb.version}_arm64.deb`, file: s.deb },
    firstBootScript: s.firstBootScript,
    ca: Buffer.from(ca),
    crl: await readFile(s.crl),
    attestationPolicy: await readFile(s.attestationPolicy),
    apt,
  };
}

/** Checks the regulator's key and certificate belong together, to this meter, under this root. */
function checkPreprovisioned(meterId: string, keyPem: string, certPem: string, caPem: string): void {
  const cert = new X509Certificate(certPem);
  if (!cert.verify(new X509Certificate(caPem).publicKey))
    throw new SeedError(`${meterId}: the certificate is not signed by the regulator root given as --ca`);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem)))
    throw new SeedError(`${meterId}: the key is not the certificate's (a swapped row?)`);
  const uri = formatIdentity({ role: 'meter', id: meterId });
  if (!(cert.subjectAltName ?? '').split(', ').includes(`URI:${uri}`))
    throw new SeedError(`${meterId}: the certificate does not name ${uri}`);
}

/** Reads and checks one device's files into its seed. */
export async function loadDeviceSeed(
  d: DeviceInput,
  shared: SharedSeed,
  imagerCompatible: boolean,
): Promise<DeviceSeed> {
  const id = d.meterId;
  const configFile = need(d.agentConfig, '--agent-config (agent.yaml)', id);
  // agent.yaml with this device's meterId (a new node: a template's comment on it may name
  // another meter), other comments kept; then checked as the agent checks it.
  const doc = parseDocument(await readText(configFile, '--agent-config'));
  doc.set('meterId', doc.createNode(id));
  const agentYaml = String(doc);
  const config = parseYamlWith(agentYaml, configFile, agentConfigSchema);
  const policyName = checkInstalledPaths(config.tre, config.policy);
  let policy: DeviceSeed['policy'];
  if (policyName) {
    const file = need(d.policy, `--policy (agent.yaml names policy: ${config.policy})`, id);
    const content = await readText(file, '--policy');
    parsePolicy(content, file);
    policy = { name: policyName, content: Buffer.from(content) };
  } else if (d.policy)
    throw new SeedError(`${id}: --policy given, but agent.yaml has no policy: key (add policy: policy.yaml)`);

  let identity: DeviceIdentity;
  if (d.key || d.cert) {
    if (d.tokenFile) throw new SeedError(`${id}: give either --key/--cert or --token-file, not both`);
    const key = await readText(need(d.key, '--key', id), '--key');
    const cert = await readText(need(d.cert, '--cert', id), '--cert');
    checkPreprovisioned(id, key, cert, Buffer.from(shared.ca).toString());
    identity = { mode: 'preprovisioned', key: Buffer.from(key), cert: Buffer.from(cert) };
  } else if (d.tokenFile) {
    const token = (await readText(d.tokenFile, '--token-file')).trim();
    identity = {
      mode: 'enroll',
      server: need(d.enrollServer, '--enroll-server', id),
      token: Buffer.from(`${token}\n`),
    };
  } else
    throw new SeedError(`${id}: give its identity: --enroll-server and --token-file, or --key and --cert`);

  const timeZone = d.timeZone ?? config.meter.timeZone;
  if (!isTimeZone(timeZone))
    throw new SeedError(`${id}: time zone ${timeZone}: an IANA name such as Europe/Amsterdam`);
  let wifi: DeviceSeed['wifi'];
  if (d.wifiSsid) {
    const passphrase = (await readText(need(d.wifiPskFile, '--wifi-psk-file', id), '--wifi-psk-file')).split(
      /\r?\n/,
    )[0]!;
    wifi = { ssid: d.wifiSsid, psk: wifiPsk(d.wifiSsid, passphrase), country: d.wifiCountry?.toUpperCase() };
  } else if (d.wifiPskFile) throw new SeedError(`${id}: --wifi-psk-file without --wifi-ssid`);
  let ssh: DeviceSeed['ssh'];
  if (d.sshKey) {
    const keys = (await readText(d.sshKey, '--ssh-key'))
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    ssh = { user: d.sshUser, keys };
  }
  return {
    meterId: id,
    hostname: d.hostname ?? defaultHostname(id),
    timeZone,
    instanceId: `meter-agent-${randomBytes(8).toString('hex')}`,
    agentYaml,
    policy,
    identity,
    wifi,
    ssh,
    imagerCompatible,
  };
}

export interface ImageOptions {
  base: string;
  xz: boolean;
  bmap: boolean;
  /** Where to write Imager's OS list for the images (their seeds then start first boot from vendor-data). */
  imagerJson?: string;
  progress: (line: string) => void;
}

/** `foo.img` -> `foo.img.bmap`, `foo.img.xz` -> `foo.img.bmap` (bmaptool finds either beside the image). */
export const bmapPathFor = (out: string) => `${out.replace(/\.xz$/, '')}.bmap`;

/**
 * Writes one image: the base copied sparse, the seed written into its boot partition, then the
 * block map and xz compression when asked. Returns what Imager's list needs.
 */
async function writeImage(
  source: string,
  out: string,
  files: Parameters<typeof writeFat>[1],
  label: string,
  o: ImageOptions,
): Promise<ImagerImage> {
  const img = o.xz ? out.replace(/\.xz$/, '') : out;
  const partial = `${img}.partial`;
  try {
    await copySparse(source, partial, o.progress);
    const layout = await readLayout(partial);
    const fat = fatAt(partial, layout.boot.offset);
    await checkPiBoot(fat, o.base);
    o.progress(`${label}: writing ${files.length} files to the boot partition`);
    await writeFat(fat, files);
    if (o.bmap) await createBmap(partial, bmapPathFor(out));
    let sums: { extract: { sha256: string; size: number }; file: { sha256: string; size: number } };
    if (o.xz) {
      sums = await compressXz(partial, `${out}.partial`, o.progress);
      await rename(`${out}.partial`, out);
      await rm(partial);
    } else {
      await rename(partial, out);
      const s = o.imagerJson ? await sha256File(out, o.progress) : { sha256: '', size: 0 };
      sums = { extract: s, file: s };
    }
    return {
      name: `Raspberry Pi OS Lite + meter-agent (${label})`,
      description: `Raspberry Pi OS Lite (64-bit) with the household meter agent, set up on first boot for ${label}`,
      path: resolve(out),
      extractSize: sums.extract.size,
      extractSha256: sums.extract.sha256,
      downloadSize: sums.file.size,
      downloadSha256: sums.file.sha256,
      releaseDate: new Date().toISOString().slice(0, 10),
      bmapPath: o.bmap ? resolve(bmapPathFor(out)) : undefined,
    };
  } finally {
    await rm(partial, { force: true });
    await rm(`${out}.partial`, { force: true });
  }
}

/** One image per device; returns the paths written. */
export async function writeDeviceImages(
  shared: SharedSeed,
  devices: readonly { seed: DeviceSeed; out: string }[],
  o: ImageOptions,
): Promise<string[]> {
  const common = sharedSeedFiles(shared);
  const written: string[] = [];
  const listed: ImagerImage[] = [];
  // An .img.xz is decompressed once, into the first device's directory, for all devices.
  let source = o.base;
  const pristine =
    o.base.endsWith('.xz') && devices.length > 1 ? `${devices[0]!.out}.base.partial` : undefined;
  try {
    if (pristine) {
      await copySparse(o.base, pristine, o.progress);
      source = pristine;
    }
    for (const { seed, out } of devices) {
      listed.push(await writeImage(source, out, [...common, ...deviceSeedFiles(seed)], seed.meterId, o));
      written.push(out);
      if (o.bmap) written.push(bmapPathFor(out));
    }
  } finally {
    if (pristine) await rm(pristine, { force: true });
  }
  if (o.imagerJson) {
    await writeFile(o.imagerJson, `${JSON.stringify(imagerOsList(listed), null, 2)}\n`);
    written.push(o.imagerJson);
  }
  return written;
}

/**
 * A batch as one shared image (the package, first-boot.sh, the regulator's files: nothing of any
 * device) and one seed directory per device, to copy onto the card's boot partition after flashing
 * (`meter-agent flash --seed DIR`, or a file manager).
 */
export async function writeSharedImage(
  shared: SharedSeed,
  devices: readonly DeviceSeed[],
  out: string,
  seedsDir: string,
  o: ImageOptions,
): Promise<string[]> {
  for (const d of devices)
    if (existsSync(join(seedsDir, d.meterId)))
      throw new SeedError(`${join(seedsDir, d.meterId)} exists: remove it first`);
  await writeImage(o.base, out, sharedSeedFiles(shared), 'shared', o);
  const written = [out, ...(o.bmap ? [bmapPathFor(out)] : [])];
  for (const d of devices) {
    const dir = join(seedsDir, d.meterId);
    await writeSeedDir(dir, deviceSeedFiles(d));
    written.push(dir);
  }
  return written;
}

/** The default output name of a device's image in a batch. */
export const batchImageName = (meterId: string, xz: boolean) => `${basename(meterId)}.img${xz ? '.xz' : ''}`;
