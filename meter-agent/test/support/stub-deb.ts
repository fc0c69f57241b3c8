/** Test support: a tiny .deb with a real control file and one file, built by dpkg-deb. */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export async function stubDeb(
  outDir: string,
  pkg: { name: string; version: string; arch: string },
): Promise<string> {
  const stage = await mkdtemp(join(outDir, '.stage-'));
  await mkdir(join(stage, 'DEBIAN'));
  await mkdir(join(stage, 'usr', 'share', 'doc', pkg.name), { recursive: true });
  await writeFile(
    join(stage, 'DEBIAN', 'control'),
    [
      `Package: ${pkg.name}`,
      `Version: ${pkg.version}`,
      `Architecture: ${pkg.arch}`,
      'Maintainer: TRE stack developers <dev@tre-stack.invalid>',
      'Section: net',
      'Priority: optional',
      `Description: stand-in for ${pkg.name} ${pkg.version} (${pkg.arch}) in repository tests`,
      '',
    ].join('\n'),
  );
  await writeFile(join(stage, 'usr', 'share', 'doc', pkg.name, 'VERSION'), `${pkg.version} ${pkg.arch}\n`);
  const deb = join(outDir, `${pkg.name}_${pkg.version}_${pkg.arch}.deb`);
  await exec('dpkg-deb', ['--build', '--root-owner-group', stage, deb]);
  await rm(stage, { recursive: true, force: true });
  return deb;
}
