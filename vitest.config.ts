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
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
