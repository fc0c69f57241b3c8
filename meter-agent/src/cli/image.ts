/** `meter-agent image`: per-device Raspberry Pi OS images for households, made offline without root. */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { SeedError } from '../boot-seed.js';
import { BATCH_COLUMNS, type BatchRow, parseBatchCsv } from '../device-batch.js';
import {
  batchImageName,
  type DeviceInput,
  loadDeviceSeed,
  loadSharedSeed,
  type SharedInput,
  writeDeviceImages,
  writeSharedImage,
} from '../device-image.js';

/** The command line: a device's inputs (one device, or the defaults of a batch) and the shared ones. */
interface ImageCliOptions extends Omit<DeviceInput, 'meterId'>, Omit<SharedInput, 'firstBootScript'> {
  base: string;
  out?: string;
  outDir?: string;
  batch?: string;
  shared?: boolean;
  meter?: string;
  xz?: boolean;
  bmap?: boolean;
  imagerJson?: string;
}

/** packaging/first-boot.sh, beside dist/ (in a checkout, and in the .deb's copy of this workspace). */
function firstBootScript(): string {
  const path = fileURLToPath(new URL('../../packaging/first-boot.sh', import.meta.url));
  if (!existsSync(path)) throw new SeedError(`${path} is missing`);
  return path;
}

/** A batch row over the command line's values; the row's paths relative to the CSV. */
function rowInput(row: BatchRow, csvDir: string, o: ImageCliOptions): DeviceInput {
  const path = (v: string | undefined) => (v === undefined ? undefined : resolve(csvDir, v));
  return {
    meterId: row.meter,
    hostname: row.hostname ?? undefined,
    agentConfig: path(row.agent_config) ?? o.agentConfig,
    policy: path(row.policy) ?? o.policy,
    key: path(row.key),
    cert: path(row.cert),
    enrollServer: o.enrollServer,
    tokenFile: path(row.token_file),
    wifiSsid: row.wifi_ssid ?? o.wifiSsid,
    wifiPskFile: path(row.wifi_psk_file) ?? o.wifiPskFile,
    wifiCountry: row.wifi_country ?? o.wifiCountry,
    sshKey: path(row.ssh_key) ?? o.sshKey,
    sshUser: o.sshUser,
    timeZone: row.time_zone ?? o.timeZone,
  };
}

export function addImageCommand(program: Command): void {
  program
    .command('image')
    .description(
      'write a Raspberry Pi OS image for a household Pi (or, with --batch, for many), offline and without root',
    )
    .requiredOption('--base <file>', 'Raspberry Pi OS Lite arm64 image, as downloaded (.img or .img.xz)')
    .requiredOption('--deb <file>', "the agent's package, meter-agent_<version>_arm64.deb")
    .option('--out <file>', 'the image to write (.img, or .img.xz to compress)')
    .option('--batch <devices.csv>', `one image per row; columns: ${BATCH_COLUMNS.join(',')}`)
    .option('--out-dir <dir>', 'with --batch: where the images (<meter>.img[.xz]) go')
    .option(
      '--shared',
      'with --batch: one shared image (meter-agent.img) and a boot seed per device (seeds/<meter>/)',
    )
    .option('--meter <id>', 'meter id (as in its certificate)')
    .option('--agent-config <file>', 'agent.yaml for the device (meterId is set to the meter id)')
    .option('--policy <file>', 'household policy (installed under the name agent.yaml gives it)')
    .requiredOption('--ca <file>', "the regulator's root certificate (ca.crt)")
    .requiredOption('--crl <file>', "the regulator's CRL (crl.pem)")
    .requiredOption(
      '--attestation-policy <file>',
      'the regulator-signed TRE whitelist (attestation-policy.jws)',
    )
    .option('--enroll-server <url>', 'zero-touch identity: the enrollment server (https://...)')
    .option('--token-file <file>', 'zero-touch identity: the one-time token from tre pki token --meter <id>')
    .option('--key <file>', 'pre-provisioned identity: the device key from tre pki issue (see below)')
    .option('--cert <file>', 'pre-provisioned identity: its certificate')
    .option('--hostname <name>', 'hostname (default meter-<id>)')
    .option('--wifi-ssid <ssid>', 'Wi-Fi network (Ethernet by DHCP is always configured)')
    .option(
      '--wifi-psk-file <file>',
      'file whose first line is the Wi-Fi passphrase (only the derived key goes on the card)',
    )
    .option('--wifi-country <CC>', 'Wi-Fi regulatory domain, e.g. NL')
    .option('--ssh-key <file>', 'SSH public key(s) for the administrator (key login only)')
    .option('--ssh-user <name>', 'the administrator account', 'pi')
    .option('--time-zone <tz>', "IANA time zone (default: agent.yaml's meter.timeZone)")
    .option(
      '--apt-dir <dir>',
      "the agent's apt repository files (packaging/apt/): updates by unattended-upgrades",
    )
    .option('--apt-uri <url>', "the apt repository's address, for meter-agent.sources (https://.../)")
    .option(
      '--apt-keyring <file>',
      "the repository's public key (default: meter-agent-archive-keyring.gpg in --apt-dir)",
    )
    .option('--xz', 'compress the images with xz (implied by --out ending .xz)')
    .option('--bmap', 'also write <image>.bmap for bmaptool copy')
    .option(
      '--imager-json <file>',
      'also write a Raspberry Pi Imager OS list (init_format cloudinit-rpi) for the images',
    )
    .addHelpText(
      'after',
      `
Identity, per device: either zero-touch (--enroll-server URL --token-file FILE: the device makes
its key on first boot and enrolls with the one-time token), or pre-provisioned (--key/--cert from
the regulator's tre pki issue). Pre-provisioned is for small batches only: the private key was
made off the device and sits in the image file (and on the card until first boot moves it to
/etc/meter-agent and erases it); treat every image and card as holding a secret.

--batch devices.csv: a header row, then one row per device. Columns: ${BATCH_COLUMNS.join(', ')}.
Only meter is required; an empty cell takes the command line's value; paths are relative to the
CSV. key/cert or token_file are per device (--enroll-server is shared).

Examples:
  meter-agent image --base 2025-11-24-raspios-trixie-arm64-lite.img.xz --deb meter-agent_0.1.0_arm64.deb \\
    --meter m-0001 --agent-config agent.yaml --policy policy.yaml --ca ca.crt --crl crl.pem \\
    --attestation-policy attestation-policy.jws --enroll-server https://enroll.example:8443 \\
    --token-file m-0001.token --wifi-ssid home --wifi-psk-file wifi.txt --wifi-country NL \\
    --ssh-key ~/.ssh/id_ed25519.pub --out m-0001.img.xz --bmap
  meter-agent image --base raspios.img.xz --deb meter-agent_0.1.0_arm64.deb --batch devices.csv \\
    --out-dir images --agent-config agent.yaml --ca ca.crt --crl crl.pem \\
    --attestation-policy attestation-policy.jws --enroll-server https://enroll.example:8443 --xz`,
    )
    .action(async (o: ImageCliOptions) => {
      const progress = (line: string) => process.stderr.write(`${line}\n`);
      const shared = await loadSharedSeed({
        deb: o.deb,
        firstBootScript: firstBootScript(),
        ca: o.ca,
        crl: o.crl,
        attestationPolicy: o.attestationPolicy,
        aptDir: o.aptDir,
        aptUri: o.aptUri,
        aptKeyring: o.aptKeyring,
      });
      const imagerCompatible = o.imagerJson !== undefined;
      let written: string[];
      if (o.batch) {
        if (o.out || o.meter || o.key || o.cert || o.tokenFile || o.hostname)
          throw new SeedError(
            'with --batch, --out, --meter, --hostname and the identity files come from the CSV',
          );
        if (!o.outDir) throw new SeedError('--batch needs --out-dir');
        const rows = parseBatchCsv(await readFile(o.batch, 'utf8'), o.batch);
        const csvDir = dirname(resolve(o.batch));
        // Every device is read and checked before the first image is written.
        const seeds = [];
        for (const row of rows)
          seeds.push(await loadDeviceSeed(rowInput(row, csvDir, o), shared, imagerCompatible));
        await mkdir(o.outDir, { recursive: true });
        const opts = { base: o.base, xz: !!o.xz, bmap: !!o.bmap, imagerJson: o.imagerJson, progress };
        if (o.shared) {
          if (o.imagerJson) throw new SeedError('--imager-json is for per-device images, not --shared');
          written = await writeSharedImage(
            shared,
            seeds,
            join(o.outDir, batchImageName('meter-agent', !!o.xz)),
            join(o.outDir, 'seeds'),
            opts,
          );
        } else
          written = await writeDeviceImages(
            shared,
            seeds.map((seed) => ({ seed, out: join(o.outDir!, batchImageName(seed.meterId, !!o.xz)) })),
            opts,
          );
      } else {
        if (o.shared || o.outDir) throw new SeedError('--shared and --out-dir go with --batch');
        if (!o.meter || !o.out)
          throw new SeedError('give --meter and --out (or --batch devices.csv --out-dir DIR)');
        const xz = !!o.xz || o.out.endsWith('.xz');
        if (!/\.img(\.xz)?$/.test(o.out) || (xz && !o.out.endsWith('.img.xz')))
          throw new SeedError(`--out ${o.out}: name it .img, or .img.xz to compress`);
        const seed = await loadDeviceSeed(
          {
            meterId: o.meter,
            hostname: o.hostname,
            agentConfig: o.agentConfig,
            policy: o.policy,
            key: o.key,
            cert: o.cert,
            enrollServer: o.enrollServer,
            tokenFile: o.tokenFile,
            wifiSsid: o.wifiSsid,
            wifiPskFile: o.wifiPskFile,
            wifiCountry: o.wifiCountry,
            sshKey: o.sshKey,
            sshUser: o.sshUser,
            timeZone: o.timeZone,
          },
          shared,
          imagerCompatible,
        );
        written = await writeDeviceImages(shared, [{ seed, out: o.out }], {
          base: o.base,
          xz,
          bmap: !!o.bmap,
          imagerJson: o.imagerJson,
          progress,
        });
      }
      for (const w of written) console.log(w);
    });
}
