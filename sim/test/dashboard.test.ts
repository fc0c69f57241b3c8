/**
 * The dashboard in a real headless browser (Debian chromium through playwright-core), at 1400 px:
 * the page loads and fills with live data from a running simulation; after its first simulated
 * day every tick label lies inside its chart, the axes carry their units, the error chart draws the
 * TRE's stated bound, and the DR and statement tables have rows; no console errors. A screenshot
 * is saved to test-artifacts/dashboard.png (git-ignored; CI keeps it).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DashboardServer } from '../src/dashboard/dashboard-server.js';
import { buildSnapshot } from '../src/dashboard/snapshot-builder.js';
import { Simulation } from '../src/simulation/simulation.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const START = Date.UTC(2026, 0, 12, 6);
let sim: Simulation;
let dashboard: DashboardServer;
let timer: NodeJS.Timeout;
let running: Promise<unknown>;
let profileDir: string;

beforeAll(async () => {
  // One simulated day, as the demo starts it: a first DR event at once, a billing boundary 2 h in.
  sim = await Simulation.create({
    households: 24,
    days: 1,
    speed: 20_000,
    startMs: START,
    earlyRounds: true,
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

/** What the page measures of one chart: its tick labels' boxes against the chart's and the plot area's. */
interface ChartLayout {
  id: string;
  units: { y: string; x: string; inside: boolean };
  ticks: { axis: string; text: string; inside: boolean; clearOfPlot: boolean }[];
  /** Each series' drawing lies within the plot area (its y range covers the data). */
  series: { key: string; inPlot: boolean }[];
}

describe.skipIf(!existsSync(CHROMIUM))('dashboard in headless chromium', () => {
  it('shows a readable first day: labels inside their charts, units, the DP bound, DR rounds, statements', {
    timeout: 120_000,
  }, async () => {
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
      // Live updates arrive without reloads while the simulation runs.
      await page.waitForFunction(() => Number(document.body.dataset.updates ?? 0) >= 5, undefined, {
        timeout: 60_000,
      });
      // Then the end of the first simulated day reaches the page.
      await running;
      const end = new Date(START + 86_400_000).toISOString().replace('T', ' ').slice(0, 16);
      await page.waitForFunction((t) => document.getElementById('simTime')?.textContent?.startsWith(t), end, {
        timeout: 60_000,
      });
      // Saved before the checks, so a failing run leaves the picture of what failed.
      await mkdir(ARTIFACTS, { recursive: true });
      const shot = join(ARTIFACTS, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`dashboard screenshot: ${shot}`);
      const state = await page.evaluate(() => ({
        group: document.getElementById('group')?.textContent,
        attestation: document.getElementById('attestation')?.textContent,
        dr: Array.from(document.querySelectorAll('#dr tbody tr')).map((tr) =>
          Array.from(tr.children).map((td) => td.textContent ?? ''),
        ),
        periods: Array.from(document.querySelectorAll('#periods tbody tr')).map((tr) =>
          Array.from(tr.children).map((td) => td.textContent ?? ''),
        ),
        bound: document.querySelector('#error [data-series="bound"]')?.getAttribute('data-points'),
        boundPath: document.querySelector('#error [data-series="bound"] path')?.getAttribute('d') ?? '',
        errorPoints: document.querySelector('#error [data-series="error"]')?.getAttribute('data-points'),
        dpSummary: document.getElementById('dpSummary')?.textContent,
      }));
      expect(state.group).toMatch(/^feeder-/);
      expect(state.attestation).toMatch(/trusted: agents verify a TPM quote \(swtpm\).*24 agents/);

      // Every tick label of every chart inside its chart's box, y labels left of the plot area,
      // x labels below it, the data inside the plot area; each axis names its unit.
      const charts = await page.evaluate(() =>
        Array.from(document.querySelectorAll('section svg.chart')).map((svg): ChartLayout => {
          const box = svg.getBoundingClientRect();
          const plot = svg.querySelector('.plot-area')!.getBoundingClientRect();
          const within = (r: DOMRect) =>
            r.width > 0 &&
            r.left >= box.left &&
            r.right <= box.right &&
            r.top >= box.top &&
            r.bottom <= box.bottom;
          return {
            id: svg.parentElement!.id,
            units: {
              y: svg.querySelector('.unit-y')?.textContent ?? '',
              x: svg.querySelector('.unit-x')?.textContent ?? '',
              inside: Array.from(svg.querySelectorAll('.unit')).every((u) =>
                within(u.getBoundingClientRect()),
              ),
            },
            series: Array.from(svg.querySelectorAll<SVGGElement>('.series')).map((g) => {
              const r = g.getBoundingClientRect();
              const px = 0.5;
              return {
                key: g.dataset.series ?? '',
                inPlot:
                  r.left >= plot.left - px &&
                  r.right <= plot.right + px &&
                  r.top >= plot.top - px &&
                  r.bottom <= plot.bottom + px,
              };
            }),
            ticks: Array.from(svg.querySelectorAll<SVGTextElement>('.tick')).map((t) => {
              const r = t.getBoundingClientRect();
              const y = t.classList.contains('tick-y');
              return {
                axis: y ? 'y' : 'x',
                text: t.textContent ?? '',
                inside: within(r),
                clearOfPlot: y ? r.right <= plot.left : r.top >= plot.bottom,
              };
            }),
          };
        }),
      );
      expect(charts.map((c) => c.id).sort()).toEqual(['aggregate', 'bills', 'budget', 'error']);
      for (const c of charts) {
        const yTicks = c.ticks.filter((t) => t.axis === 'y');
        expect(yTicks.length, c.id).toBeGreaterThanOrEqual(2);
        expect(c.ticks.filter((t) => t.axis === 'x').length, c.id).toBeGreaterThanOrEqual(2);
        for (const t of c.ticks)
          expect(t, `${c.id} ${t.axis} tick "${t.text}"`).toMatchObject({ inside: true, clearOfPlot: true });
        for (const sr of c.series)
          expect(sr, `${c.id} series ${sr.key}`).toEqual({ key: sr.key, inPlot: true });
        // Distinct labels: no "0,000" repeated up the axis.
        expect(new Set(yTicks.map((t) => t.text)).size, c.id).toBe(yTicks.length);
      }
      const units = Object.fromEntries(charts.map((c) => [c.id, c.units]));
      expect(units.aggregate).toEqual({ y: 'kWh', x: expect.stringMatching(/UTC/), inside: true });
      expect(units.error).toEqual({ y: 'kWh', x: expect.stringMatching(/UTC/), inside: true });
      expect(units.bills).toEqual({ y: 'GBP', x: expect.stringMatching(/UTC/), inside: true });
      expect(units.budget).toEqual({ y: 'households', x: expect.stringMatching(/%/), inside: true });

      // The stated 95 % bound is drawn beside the measured error, one point per release.
      expect(Number(state.bound)).toBeGreaterThan(1);
      expect(state.bound).toBe(state.errorPoints);
      expect(state.boundPath.split('L').length).toBe(Number(state.bound));
      expect(state.dpSummary).toMatch(/^\d+ of \d+ releases shown .* outside the stated bound/);

      // Within the first day: the first DR round (raised at once) and the evening one, with bids;
      // the first billing period's statements, one per household.
      expect(state.dr.map((r) => r[0])).toEqual(['first-2026-01-12-0615', 'evening-2026-01-12']);
      expect(state.dr.some((r) => Number(r[2]) > 0)).toBe(true);
      expect(state.periods.length).toBeGreaterThanOrEqual(1);
      expect(state.periods.at(-1)).toEqual([
        '11 Jan 08:00 – 12 Jan 08:00',
        '24',
        expect.stringMatching(/^£\d/),
        expect.any(String),
      ]);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
