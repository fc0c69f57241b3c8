/**
 * The dashboard in a real headless browser (Debian chromium through playwright-core): the page
 * loads, the plots fill with live data from a running simulation, no console errors; a screenshot
 * is saved to test-artifacts/dashboard.png.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DashboardServer } from '../src/dashboard/dashboard-server.js';
import { buildSnapshot } from '../src/dashboard/snapshot-builder.js';
import { Simulation } from '../src/simulation/simulation.js';

const CHROMIUM = '/usr/bin/chromium';
let sim: Simulation;
let dashboard: DashboardServer;
let timer: NodeJS.Timeout;
let running: Promise<unknown>;
let profileDir: string;

beforeAll(async () => {
  sim = await Simulation.create({
    households: 24,
    days: 30,
    speed: 20_000,
    startMs: Date.UTC(2026, 0, 12, 6),
  });
  dashboard = await DashboardServer.start(0);
  timer = setInterval(() => dashboard.publish(buildSnapshot(sim, 20_000)), 200);
  running = sim.run();
  profileDir = await mkdtemp(join(tmpdir(), 'chromium-profile-'));
}, 120_000);

afterAll(async () => {
  sim?.stopRunning();
  await running;
  clearInterval(timer);
  await dashboard?.close();
  await sim?.stop();
  await rm(profileDir, { recursive: true, force: true });
});

describe.skipIf(!existsSync(CHROMIUM))('dashboard in headless chromium', () => {
  it('loads, fills its plots with live data, logs no errors', { timeout: 90_000 }, async () => {
    // A fresh --user-data-dir: playwright passes profileDir as that flag.
    const browser = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 1100 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(dashboard.url);
      // Live updates arrive without reloads, and the aggregate plot gets released totals.
      await page.waitForFunction(() => Number(document.body.dataset.updates ?? 0) >= 5, undefined, {
        timeout: 60_000,
      });
      await page.waitForFunction(() => document.querySelectorAll('#aggregate canvas').length > 0, undefined, {
        timeout: 60_000,
      });
      const state = await page.evaluate(() => ({
        group: document.getElementById('group')?.textContent,
        attestation: document.getElementById('attestation')?.textContent,
        canvases: document.querySelectorAll('canvas').length,
        budgetCanvas: document.querySelectorAll('#budget canvas').length,
      }));
      expect(state.group).toMatch(/^feeder-/);
      expect(state.attestation).toMatch(/trusted: agents verify a TPM quote \(swtpm\).*24 agents/);
      expect(state.canvases).toBeGreaterThanOrEqual(4);
      expect(state.budgetCanvas).toBe(1);
      const snapshot = (await (await fetch(`${dashboard.url}snapshot`)).json()) as {
        aggregates: { points: unknown[] }[];
      };
      expect(snapshot.aggregates[0]!.points.length).toBeGreaterThan(0);
      await mkdir('test-artifacts', { recursive: true });
      await page.screenshot({ path: 'test-artifacts/dashboard.png', fullPage: true });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
