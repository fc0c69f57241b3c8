/**
 * The processes whose command line names a directory: what a run started under its working
 * directory (swtpm with its state there, a TRE with its PKI and data, nats-server with its
 * config) and may have left behind. Linux only (`/proc`); the tests that stop runs check it.
 */
import { readdir, readFile } from 'node:fs/promises';

export async function processesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) found.push(cmdline.replaceAll('\0', ' '));
  }
  return found;
}
