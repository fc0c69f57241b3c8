/**
 * What goes onto a household Pi's FAT boot partition (bootfs, `/boot/firmware` on Raspberry Pi OS):
 * the cloud-init NoCloud seed (`user-data`, `meta-data`, `network-config`, and `vendor-data` for
 * images meant for Raspberry Pi Imager) and the `meter-agent/` directory that
 * `packaging/first-boot.sh` installs from. Pure functions of the device's settings: no I/O.
 */
import { pbkdf2Sync } from 'node:crypto';
import { posix } from 'node:path';
import { ID_PATTERN } from '@tre/protocol';
import { stringify } from 'yaml';

/** Where Raspberry Pi OS mounts the boot partition, and the seed directory on it. */
export const BOOT_MOUNT = '/boot/firmware';
export const SEED_DIR = 'meter-agent';
export const SEED_PATH = `${BOOT_MOUNT}/${SEED_DIR}`;
export const CONFIG_DIR = '/etc/meter-agent';
/** Fixed by the enrollment command (`meter-agent provision enroll`) and by first-boot.sh. */
export const IDENTITY_PATHS = {
  key: `${CONFIG_DIR}/device.key`,
  cert: `${CONFIG_DIR}/device.crt`,
  ca: `${CONFIG_DIR}/ca.crt`,
  token: `${SEED_PATH}/enroll.token`,
} as const;
/** The regulator's files every device gets, by the names first-boot.sh and agent.yaml use. */
export const REGULATOR_FILES = {
  ca: 'ca.crt',
  crl: 'crl.pem',
  attestationPolicy: 'attestation-policy.jws',
} as const;
/** Files of the agent's apt repository (packaging/apt/) that first-boot.sh installs when present. */
export const APT_FILES = [
  'meter-agent.sources',
  '52meter-agent-unattended-upgrades',
  'meter-agent-archive-keyring.gpg',
  'meter-agent.pref',
] as const;

export class SeedError extends Error {
  override readonly name = 'SeedError';
  readonly code = 'SEED_INVALID';
}

/** How the device gets its identity. */
export type DeviceIdentity =
  /** (a) the regulator's `tre pki issue` key and certificate travel in the image (small batches). */
  | { mode: 'preprovisioned'; key: Uint8Array; cert: Uint8Array }
  /** (b) zero-touch: a one-time token; the key is made on the device on first boot. */
  | { mode: 'enroll'; server: string; token: Uint8Array };

export interface WifiSettings {
  ssid: string;
  /** The WPA pre-shared key as 64 hex digits (`wifiPsk`), so the passphrase is not on the card. */
  psk: string;
  /** ISO 3166 alpha-2 regulatory domain, e.g. NL. */
  country?: string;
}

export interface DeviceSeed {
  meterId: string;
  hostname: string;
  timeZone: string;
  /** Unique per device and per imaging: cloud-init runs its first-boot modules again when it changes. */
  instanceId: string;
  /** agent.yaml as it is installed (meterId set, paths inside /etc/meter-agent). */
  agentYaml: string;
  /** The household policy, by the file name agent.yaml gives it. */
  policy?: { name: string; content: Uint8Array };
  identity: DeviceIdentity;
  /** Ethernet (eth0, DHCP) is always configured; Wi-Fi (wlan0) when given. */
  wifi?: WifiSettings;
  /** SSH login for the administrator (key only; no password). */
  ssh?: { user: string; keys: string[] };
  /** For Raspberry Pi Imager: first boot is started from vendor-data, which Imager does not replace. */
  imagerCompatible: boolean;
}

export interface SharedSeed {
  /** The agent's arm64 package: its name on the card and where it is on this machine. */
  deb: { name: string; file: string };
  /** packaging/first-boot.sh on this machine. */
  firstBootScript: string;
  ca: Uint8Array;
  crl: Uint8Array;
  attestationPolicy: Uint8Array;
  /** Files of the agent's apt repository (names from APT_FILES). */
  apt: { name: string; content: Uint8Array }[];
}

/** One file of the seed, by its path on the boot partition. Secrets are written 0600 and removed on first boot. */
export interface SeedFile {
  path: string;
  source: { bytes: Uint8Array } | { file: string };
  secret: boolean;
  /** Made executable where the file system keeps modes (seed directories; FAT does not). */
  executable?: boolean;
}

const text = (s: string) => new TextEncoder().encode(s);
const HOSTNAME = /^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** The hostname a meter gets unless one is given: `meter-<id>` as a DNS label. */
export function defaultHostname(meterId: string): string {
  return `meter-${meterId}`
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .slice(0, 63)
    .replace(/-+$/, '');
}

/**
 * The WPA2 pre-shared key for a passphrase (IEEE 802.11i: PBKDF2-HMAC-SHA1, SSID as salt, 4096
 * rounds, 32 bytes), as netplan takes it; 64 hex digits are taken as the key itself.
 */
export function wifiPsk(ssid: string, passphrase: string): string {
  if (/^[0-9a-fA-F]{64}$/.test(passphrase)) return passphrase.toLowerCase();
  if (!/^[\x20-\x7e]{8,63}$/.test(passphrase))
    throw new SeedError('a Wi-Fi passphrase is 8 to 63 printable ASCII characters (or the 64-hex-digit key)');
  const ssidBytes = Buffer.from(ssid, 'utf8');
  if (ssidBytes.length < 1 || ssidBytes.length > 32) throw new SeedError('a Wi-Fi SSID is 1 to 32 bytes');
  return pbkdf2Sync(passphrase, ssidBytes, 4096, 32, 'sha1').toString('hex');
}

/** Checks what would otherwise fail only on the device, with a message that says what to change. */
export function checkDeviceSeed(d: DeviceSeed): void {
  const fail = (m: string): never => {
    throw new SeedError(`${d.meterId}: ${m}`);
  };
  if (!ID_PATTERN.test(d.meterId))
    fail('the meter id is 1-64 characters of a-z 0-9 . _ - (as in its certificate)');
  if (!HOSTNAME.test(d.hostname))
    fail(`hostname ${d.hostname}: 1-63 characters of a-z 0-9 -, not starting or ending with -`);
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(d.instanceId))
    fail('the instance id is 1-128 characters of A-Z a-z 0-9 . _ -');
  if (d.identity.mode === 'enroll') {
    if (!/^https:\/\/[^\s/]+(\/\S*)?$/.test(d.identity.server))
      fail(`--enroll-server ${d.identity.server}: an https:// URL`);
    const token = new TextDecoder().decode(d.identity.token).trim();
    if (!/^\S+$/.test(token)) fail('the enrollment token file holds one token (one line, no spaces)');
  }
  if (d.wifi) {
    if (!/^[0-9a-f]{64}$/.test(d.wifi.psk)) fail('the Wi-Fi key is 64 hex digits (wifiPsk)');
    if (d.wifi.country !== undefined && !/^[A-Z]{2}$/.test(d.wifi.country))
      fail(`Wi-Fi country ${d.wifi.country}: two capital letters (ISO 3166), e.g. NL`);
  }
  if (d.ssh) {
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(d.ssh.user)) fail(`SSH user ${d.ssh.user}: a Linux user name`);
    if (d.ssh.keys.length === 0) fail('the SSH public key file has no key');
    for (const k of d.ssh.keys)
      if (!/^(ssh-|ecdsa-|sk-)[a-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$/.test(k))
        fail('the SSH key file must hold public keys (ssh-ed25519 AAAA... comment), one a line');
  }
  if (d.policy && !/^[A-Za-z0-9._-]+$/.test(d.policy.name)) fail(`policy file name ${d.policy.name}`);
}

/** `meta-data`: the NoCloud instance id (both spellings: cloud-init reads `instance-id`; Pi OS's stock file has `instance_id`). */
export function metaData(d: Pick<DeviceSeed, 'instanceId' | 'hostname'>): string {
  return [
    '# Written by `meter-agent image`. A new instance id makes cloud-init run its first-boot modules again.',
    'dsmode: local',
    `instance-id: ${d.instanceId}`,
    `instance_id: ${d.instanceId}`,
    `local-hostname: ${d.hostname}`,
    '',
  ].join('\n');
}

const FIRST_BOOT = `${SEED_PATH}/first-boot.sh`;

/** `user-data` (#cloud-config, valid for `cloud-init schema --config-file`). */
export function userData(d: DeviceSeed): string {
  const config: Record<string, unknown> = {
    hostname: d.hostname,
    manage_etc_hosts: true,
    timezone: d.timeZone,
  };
  const runcmd: string[][] = [];
  if (d.ssh) {
    // Singular `user:` extends the image's default user (keeps its groups), as Imager does.
    config.user = {
      name: d.ssh.user,
      shell: '/bin/bash',
      lock_passwd: true,
      ssh_authorized_keys: d.ssh.keys,
      sudo: 'ALL=(ALL) NOPASSWD:ALL',
    };
    config.ssh_pwauth = false;
    // cc_ssh does not enable sshd, and Raspberry Pi OS ships it disabled.
    runcmd.push(['systemctl', 'enable', '--now', 'ssh']);
  }
  if (!d.imagerCompatible) runcmd.push(['sh', FIRST_BOOT]);
  if (runcmd.length > 0) config.runcmd = runcmd;
  const how = d.imagerCompatible
    ? `# First boot: vendor-data runs ${FIRST_BOOT} (also when Raspberry Pi Imager replaced this file).`
    : `# First boot: cloud-init applies this, then runcmd runs ${FIRST_BOOT}\n# (installs the agent, its configuration and identity, enables it).`;
  return `#cloud-config\n# meter-agent image for meter ${d.meterId}, written by \`meter-agent image\`.\n${how}\n${stringify(config, { lineWidth: 0 })}`;
}

/** `vendor-data`: a script cloud-init runs once per instance (scripts_vendor), whatever user-data says. */
export function vendorData(): string {
  return `#!/bin/sh\n# meter-agent: installs the agent on first boot. cloud-init runs vendor-data scripts once per\n# instance, also when Raspberry Pi Imager replaced user-data with its own customisation.\nexec sh ${FIRST_BOOT}\n`;
}

/** `network-config` (netplan v2): Ethernet by DHCP, and Wi-Fi when given; both optional so boot does not wait for the other. */
export function networkConfig(wifi?: WifiSettings): string {
  const network: Record<string, unknown> = {
    version: 2,
    ethernets: { eth0: { dhcp4: true, dhcp6: true, optional: true } },
  };
  if (wifi)
    network.wifis = {
      wlan0: {
        dhcp4: true,
        ...(wifi.country ? { 'regulatory-domain': wifi.country } : {}),
        'access-points': { [wifi.ssid]: { password: wifi.psk } },
        optional: true,
      },
    };
  return `# Written by \`meter-agent image\` (netplan version 2).\n${stringify({ network }, { lineWidth: 0 })}`;
}

/** `meter-agent/seed.conf`: what first-boot.sh needs to know, KEY=value lines (read, never sourced). */
export function seedConf(d: DeviceSeed): string {
  const lines = [`METER_ID=${d.meterId}`, `IDENTITY=${d.identity.mode}`];
  if (d.identity.mode === 'enroll') lines.push(`ENROLL_SERVER=${d.identity.server}`);
  return `${lines.join('\n')}\n`;
}

/** The files one device's seed adds to the boot partition. */
export function deviceSeedFiles(d: DeviceSeed): SeedFile[] {
  checkDeviceSeed(d);
  const files: SeedFile[] = [
    { path: 'user-data', source: { bytes: text(userData(d)) }, secret: false },
    { path: 'meta-data', source: { bytes: text(metaData(d)) }, secret: false },
    // The Wi-Fi key is a secret of the household, like the device key.
    { path: 'network-config', source: { bytes: text(networkConfig(d.wifi)) }, secret: d.wifi !== undefined },
    { path: `${SEED_DIR}/seed.conf`, source: { bytes: text(seedConf(d)) }, secret: false },
    { path: `${SEED_DIR}/etc/agent.yaml`, source: { bytes: text(d.agentYaml) }, secret: false },
  ];
  if (d.imagerCompatible)
    files.push({ path: 'vendor-data', source: { bytes: text(vendorData()) }, secret: false });
  if (d.policy)
    files.push({
      path: `${SEED_DIR}/etc/${d.policy.name}`,
      source: { bytes: d.policy.content },
      secret: false,
    });
  if (d.identity.mode === 'preprovisioned') {
    files.push({ path: `${SEED_DIR}/etc/device.crt`, source: { bytes: d.identity.cert }, secret: false });
    files.push({ path: `${SEED_DIR}/device.key`, source: { bytes: d.identity.key }, secret: true });
  } else {
    files.push({ path: `${SEED_DIR}/enroll.token`, source: { bytes: d.identity.token }, secret: true });
  }
  return files;
}

/** The files every device's boot partition carries (the shared image of a batch has only these). */
export function sharedSeedFiles(s: SharedSeed): SeedFile[] {
  if (!/^meter-agent_[A-Za-z0-9.+~-]+_arm64\.deb$/.test(s.deb.name))
    throw new SeedError(`${s.deb.name}: the package must be meter-agent_<version>_arm64.deb`);
  const files: SeedFile[] = [
    {
      path: `${SEED_DIR}/first-boot.sh`,
      source: { file: s.firstBootScript },
      secret: false,
      executable: true,
    },
    { path: `${SEED_DIR}/${s.deb.name}`, source: { file: s.deb.file }, secret: false },
    { path: `${SEED_DIR}/etc/${REGULATOR_FILES.ca}`, source: { bytes: s.ca }, secret: false },
    { path: `${SEED_DIR}/etc/${REGULATOR_FILES.crl}`, source: { bytes: s.crl }, secret: false },
    {
      path: `${SEED_DIR}/etc/${REGULATOR_FILES.attestationPolicy}`,
      source: { bytes: s.attestationPolicy },
      secret: false,
    },
  ];
  for (const f of s.apt) {
    if (!(APT_FILES as readonly string[]).includes(f.name))
      throw new SeedError(`apt/${f.name}: not one of ${APT_FILES.join(', ')}`);
    files.push({ path: `${SEED_DIR}/apt/${f.name}`, source: { bytes: f.content }, secret: false });
  }
  return files;
}

/**
 * Where agent.yaml's files are once installed, checked against where first-boot.sh puts them:
 * returns the policy's file name in /etc/meter-agent (undefined: the agent never bids).
 */
export function checkInstalledPaths(
  tre: { ca: string; cert: string; key: string; crl?: string; attestationPolicy: string },
  policy?: string,
): string | undefined {
  const at = (p: string) => posix.resolve(CONFIG_DIR, p);
  const want: [string, string | undefined, string][] = [
    ['tre.ca', tre.ca, IDENTITY_PATHS.ca],
    ['tre.cert', tre.cert, IDENTITY_PATHS.cert],
    ['tre.key', tre.key, IDENTITY_PATHS.key],
    ['tre.crl', tre.crl ?? REGULATOR_FILES.crl, `${CONFIG_DIR}/${REGULATOR_FILES.crl}`],
    ['tre.attestationPolicy', tre.attestationPolicy, `${CONFIG_DIR}/${REGULATOR_FILES.attestationPolicy}`],
  ];
  for (const [key, value, path] of want)
    if (value !== undefined && at(value) !== path)
      throw new SeedError(
        `agent.yaml: ${key} is ${value}, but first boot installs it as ${path}: set ${key}: ${posix.basename(path)}`,
      );
  if (policy === undefined) return undefined;
  const installed = at(policy);
  const name = posix.basename(installed);
  const reserved = ['agent.yaml', 'device.key', 'device.crt', ...Object.values(REGULATOR_FILES)];
  if (posix.dirname(installed) !== CONFIG_DIR || reserved.includes(name))
    throw new SeedError(
      `agent.yaml: policy ${policy} must be a file of its own in ${CONFIG_DIR}, e.g. policy: policy.yaml`,
    );
  return name;
}
