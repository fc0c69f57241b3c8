/**
 * Test support: apt-get and apt-cache with their own configuration, sources, keys, preferences,
 * lists, cache and dpkg status under one directory (APT_CONFIG), so nothing of the machine's apt
 * setup is read or written; runs as root and as any other user.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface AptResult {
  code: number;
  /** stdout and stderr together, as a person reading the terminal sees them. */
  output: string;
}

export interface AptSandbox {
  dir: string;
  /** `apt-get ARGS` (or another apt tool) in the sandbox; never throws on a non-zero exit. */
  run(tool: 'apt-get' | 'apt-cache' | 'apt-config', args: string[], cwd?: string): Promise<AptResult>;
}

export interface AptSandboxOptions {
  /** The sources list, deb822 (written as the only .sources file). */
  sources: string;
  /** Files for preferences.d, by name. */
  preferences?: Record<string, string>;
  /** Files for apt.conf.d, by name (read in name order, after the sandbox's own settings). */
  confParts?: Record<string, string>;
  /** Architectures besides the native one (e.g. arm64 on an amd64 machine). */
  foreignArchitectures?: string[];
}

export async function aptSandbox(dir: string, options: AptSandboxOptions): Promise<AptSandbox> {
  const etc = join(dir, 'etc');
  for (const d of ['etc/apt.conf.d', 'etc/preferences.d', 'etc/trusted.gpg.d', 'etc/sources.list.d'])
    await mkdir(join(dir, d), { recursive: true });
  for (const d of ['state/lists/partial', 'cache/archives/partial', 'log'])
    await mkdir(join(dir, d), { recursive: true });
  await writeFile(join(dir, 'state', 'status'), '');
  await writeFile(join(etc, 'sources.list.d', 'sandbox.sources'), options.sources);
  for (const [name, text] of Object.entries(options.preferences ?? {}))
    await writeFile(join(etc, 'preferences.d', name), text);
  for (const [name, text] of Object.entries(options.confParts ?? {}))
    await writeFile(join(etc, 'apt.conf.d', name), text);
  const native = (await exec('dpkg', ['--print-architecture'])).stdout.trim();
  const arches = [native, ...(options.foreignArchitectures ?? []).filter((a) => a !== native)];
  const conf = [
    'Dir "/";',
    `Dir::State "${dir}/state";`,
    `Dir::State::status "${dir}/state/status";`,
    `Dir::Cache "${dir}/cache";`,
    `Dir::Log "${dir}/log";`,
    `Dir::Etc "${etc}";`,
    `Dir::Etc::main "${dir}/apt.conf";`,
    `Dir::Etc::Parts "${etc}/apt.conf.d";`,
    `Dir::Etc::SourceList "${etc}/sources.list";`, // absent: only sources.list.d
    `Dir::Etc::SourceParts "${etc}/sources.list.d";`,
    `Dir::Etc::Trusted "${etc}/trusted.gpg";`, // absent, and trusted.gpg.d empty: only Signed-By keys
    `Dir::Etc::TrustedParts "${etc}/trusted.gpg.d";`,
    `Dir::Etc::Preferences "${etc}/preferences";`,
    `Dir::Etc::PreferencesParts "${etc}/preferences.d";`,
    `APT::Architecture "${native}";`,
    `APT::Architectures { ${arches.map((a) => `"${a}";`).join(' ')} };`,
    'Acquire::Languages "none";',
    'Acquire::Retries "0";',
    // As root apt downloads as _apt, who cannot enter a private temporary directory; as any other
    // user it downloads as that user (no sandbox user to switch to), which needs nothing set.
    ...(process.getuid?.() === 0 ? ['APT::Sandbox::User "root";'] : []),
    '',
  ].join('\n');
  await writeFile(join(dir, 'apt.conf'), conf);
  const env = { ...process.env, APT_CONFIG: join(dir, 'apt.conf'), LC_ALL: 'C', LANG: 'C' };
  return {
    dir,
    async run(tool, args, cwd = dir) {
      try {
        const { stdout, stderr } = await exec(tool, args, { env, cwd, maxBuffer: 8 * 2 ** 20 });
        return { code: 0, output: stdout + stderr };
      } catch (err) {
        const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string };
        if (typeof e.code !== 'number') throw err; // not started (ENOENT): a broken setup, not a refusal
        return { code: e.code, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
      }
    },
  };
}
