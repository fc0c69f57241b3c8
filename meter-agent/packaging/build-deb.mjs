#!/usr/bin/env node
/**
 * Builds the meter agent's Debian packages for the Pi (arm64) and PCs (amd64):
 *   node meter-agent/packaging/build-deb.mjs [--arch arm64,amd64] [--out DIR]
 * Each package carries the compiled JS of meter-agent and the workspaces it imports, and its
 * production node_modules for that architecture, installed from the npm registry with the
 * versions pinned by the repository's lockfile (`npm install --omit=dev --os=linux --cpu=ARCH
 * --ignore-scripts`): native modules come as prebuilt binaries inside their npm tarballs
 * (serialport's bindings-cpp prebuilds, koffi's platform packages), nothing is compiled.
 * Run `npm run build` first (the npm script `package` does).
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const arches = opt('arch', 'arm64,amd64').split(',');
const outDir = resolve(opt('out', join(root, 'meter-agent', 'dist-deb')));
const NODE_CPU = { arm64: 'arm64', amd64: 'x64' };

const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'));
const agentPkg = readJson(join(root, 'meter-agent', 'package.json'));
const version = agentPkg.version;

/** The workspaces the agent imports (transitively), and the external dependencies they need. */
function closure() {
  const workspaces = new Set();
  const external = {};
  const visit = (dir) => {
    if (workspaces.has(dir)) return;
    workspaces.add(dir);
    const pkg = readJson(join(root, dir, 'package.json'));
    for (const name of Object.keys(pkg.dependencies ?? {})) {
      if (name.startsWith('@tre/')) visit(name.slice('@tre/'.length));
      else external[name] = readJson(join(root, 'node_modules', name, 'package.json')).version; // pinned
    }
  };
  visit('meter-agent');
  return { workspaces: [...workspaces], external };
}

function run(cmd, cmdArgs, cwd) {
  execFileSync(cmd, cmdArgs, { cwd, stdio: ['ignore', 2, 'inherit'] }); // progress to stderr; stdout lists the packages
}

/** Prebuilt binaries for other platforms (serialport ships them all in one tarball) are removed. */
function pruneForeignBinaries(dir, cpu) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const path = join(dir, entry.name);
    if (entry.name === 'prebuilds') {
      for (const platform of readdirSync(path))
        if (platform !== `linux-${cpu}`) rmSync(join(path, platform), { recursive: true, force: true });
    } else pruneForeignBinaries(path, cpu);
  }
}

function stage(arch) {
  const { workspaces, external } = closure();
  const stageDir = join(outDir, `stage-${arch}`);
  rmSync(stageDir, { recursive: true, force: true });
  const lib = join(stageDir, 'usr', 'lib', 'meter-agent');
  mkdirSync(lib, { recursive: true });
  writeFileSync(
    join(lib, 'package.json'),
    `${JSON.stringify({ name: 'meter-agent-runtime', private: true, type: 'module', dependencies: external }, null, 2)}\n`,
  );
  console.error(
    `[${arch}] npm install --omit=dev --os=linux --cpu=${NODE_CPU[arch]} (${Object.keys(external).length} packages)`,
  );
  run(
    'npm',
    [
      'install',
      '--omit=dev',
      '--os=linux',
      `--cpu=${NODE_CPU[arch]}`,
      '--ignore-scripts',
      '--no-audit',
      '--no-fund',
      '--no-package-lock',
      '--prefer-offline',
      '--loglevel=error',
    ],
    lib,
  );
  pruneForeignBinaries(join(lib, 'node_modules'), NODE_CPU[arch]);
  for (const ws of workspaces) {
    const dest = join(lib, 'node_modules', '@tre', ws);
    mkdirSync(dest, { recursive: true });
    if (!existsSync(join(root, ws, 'dist')))
      throw new Error(`${ws}/dist is missing: run npm run build first`);
    cpSync(join(root, ws, 'dist'), join(dest, 'dist'), {
      recursive: true,
      filter: (p) => !p.endsWith('.map') && !p.endsWith('.tsbuildinfo'),
    });
    cpSync(join(root, ws, 'package.json'), join(dest, 'package.json'));
  }
  // `meter-agent image` puts first-boot.sh on the cards it makes (it finds it beside dist/).
  cpSync(
    join(here, 'first-boot.sh'),
    join(lib, 'node_modules', '@tre', 'meter-agent', 'packaging', 'first-boot.sh'),
  );
  for (const extra of ['examples', 'policy.schema.json']) {
    if (existsSync(join(root, 'hems-policy', extra)))
      cpSync(join(root, 'hems-policy', extra), join(lib, 'node_modules', '@tre', 'hems-policy', extra), {
        recursive: true,
      });
  }
  // Entry point, service, configuration example.
  const bin = join(stageDir, 'usr', 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    join(bin, 'meter-agent'),
    '#!/bin/sh\nexec node /usr/lib/meter-agent/node_modules/@tre/meter-agent/dist/cli.js "$@"\n',
  );
  chmodSync(join(bin, 'meter-agent'), 0o755);
  cpSync(
    join(here, 'meter-agent.service'),
    join(stageDir, 'lib', 'systemd', 'system', 'meter-agent.service'),
  );
  cpSync(join(here, 'agent.example.yaml'), join(stageDir, 'etc', 'meter-agent', 'agent.yaml.example'));
  const debian = join(stageDir, 'DEBIAN');
  mkdirSync(debian, { recursive: true });
  writeFileSync(
    join(debian, 'control'),
    [
      'Package: meter-agent',
      `Version: ${version}`,
      `Architecture: ${arch}`,
      'Maintainer: TRE stack developers <dev@tre-stack.invalid>',
      'Depends: nodejs (>= 20) | nodejs-lts, libsystemd0',
      'Section: net',
      'Priority: optional',
      'Description: household smart-meter agent for a Trustworthy Remote Entity (TRE)',
      ' Reads the meter (DSMR P1 / IEC 62056-21), sends interval readings over mutual TLS',
      ' to an attested TRE, and bids in demand response by the household policy.',
      '',
    ].join('\n'),
  );
  cpSync(join(here, 'postinst'), join(debian, 'postinst'));
  chmodSync(join(debian, 'postinst'), 0o755);
  const deb = join(outDir, `meter-agent_${version}_${arch}.deb`);
  // gzip: seconds instead of xz's tens of seconds for a package this size (about 6 MB instead of 4).
  run('dpkg-deb', ['--build', '--root-owner-group', '-Zgzip', stageDir, deb]);
  rmSync(stageDir, { recursive: true, force: true });
  return deb;
}

mkdirSync(outDir, { recursive: true });
for (const arch of arches) {
  if (!NODE_CPU[arch]) throw new Error(`unknown architecture ${arch}; use arm64 or amd64`);
  console.log(stage(arch));
}
