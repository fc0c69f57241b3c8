/** The agent's version, from its package.json (shown by `--version`, sent to Home Assistant and in metrics). */
import { readFileSync } from 'node:fs';

export const AGENT_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
