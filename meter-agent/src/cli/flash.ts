/** `meter-agent flash`: writes an image to an SD card or USB disk, after the user names the disk. */
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { type Command, Option } from 'commander';
import {
  confirmationPrompt,
  FlashError,
  flashRefusal,
  gb,
  imageSize,
  inspectBlockDevice,
  writeImageToDevice,
} from '../block-device.js';
import type { SeedFile } from '../boot-seed.js';
import { checkPiBoot, fatAt, readLayout, writeFat } from '../disk-image.js';

interface FlashCliOptions {
  image: string;
  device: string;
  seed?: string;
  yes?: boolean;
  sysRoot?: string;
  mountsFile?: string;
}

/** A seed directory (`meter-agent image --batch --shared`: seeds/<meter>/) as files for the boot partition. */
async function seedDirFiles(dir: string): Promise<SeedFile[]> {
  const files: SeedFile[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) {
      const file = join(e.parentPath, e.name);
      files.push({ path: relative(dir, file), source: { file }, secret: false });
    }
  if (!files.some((f) => f.path === 'user-data'))
    throw new FlashError('NOT_A_DISK', `--seed ${dir}: no user-data in it`);
  return files;
}

async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

export function addFlashCommand(program: Command): void {
  program
    .command('flash')
    .description(
      'write an image to an SD card or USB disk (asks you to type the disk name; refuses mounted and system disks)',
    )
    .requiredOption('--image <file>', 'the image (.img or .img.xz), e.g. from meter-agent image')
    .requiredOption('--device <disk>', 'the whole disk, e.g. /dev/sdb or /dev/mmcblk0 (lsblk lists them)')
    .option(
      '--seed <dir>',
      "then copy a device's boot seed (meter-agent image --batch --shared: seeds/<meter>) onto its boot partition",
    )
    .option('--yes', 'do not ask (scripts); mounted and system disks are still refused')
    .addOption(new Option('--sys-root <dir>', 'sysfs root (tests)').default('/sys').hideHelp())
    .addOption(new Option('--mounts-file <file>', 'mount table (tests)').default('/proc/mounts').hideHelp())
    .action(async (o: FlashCliOptions) => {
      const progress = (line: string) => process.stderr.write(`${line}\n`);
      const seed = o.seed ? await seedDirFiles(o.seed) : undefined;
      const size = await imageSize(o.image);
      const inspect = async () =>
        inspectBlockDevice(o.device, {
          sysRoot: o.sysRoot,
          mounts: await readFile(o.mountsFile ?? '/proc/mounts', 'utf8'),
        });
      const disk = await inspect();
      const refusal = flashRefusal(disk, size);
      if (refusal) throw refusal;
      if (!o.yes) {
        const answer = (await ask(confirmationPrompt(disk))).trim();
        if (answer !== disk.name)
          throw new FlashError('DECLINED', `not written (you typed "${answer}", not ${disk.name})`);
        const again = flashRefusal(await inspect(), size); // an automounter may have mounted it meanwhile
        if (again) throw again;
      }
      progress(`writing ${o.image} (${gb(size)}) to ${o.device}`);
      await writeImageToDevice(o.image, o.device, progress);
      if (seed) {
        const layout = await readLayout(o.device);
        const fat = fatAt(o.device, layout.boot.offset);
        await checkPiBoot(fat, o.device);
        await writeFat(fat, seed);
        progress(`copied the seed ${o.seed} (${seed.length} files) to the boot partition`);
      }
      console.log(`${o.device}: written; eject it and put it in the Pi`);
    });
}
