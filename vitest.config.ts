import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const workspaces = ['protocol', 'hardware', 'hems-policy', 'tre-broker', 'meter-agent', 'sim', 'bench'];

export default defineConfig({
  resolve: {
    alias: workspaces.map((w) => ({
      find: `@tre/${w}`,
      replacement: fileURLToPath(new URL(`./${w}/src/index.ts`, import.meta.url)),
    })),
  },
  test: {
    include: ['*/test/**/*.test.ts'],
    pool: 'forks',
    // Vitest's default on 2 cores is one worker; most files wait on servers, sockets and timers.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
