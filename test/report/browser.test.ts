// Opens report.html in headless Chromium: it must load without console errors and show every plot and table.
import * as fs from 'fs';
import * as path from 'path';
import { pathToFileURL } from 'url';
import { chromium, type Browser } from 'playwright-core';
import { compareRuns, type CompareResult } from '../../src/report/compare';
import { tmpDir, writeRichExperiment } from './fixtures';

const CHROMIUM = '/usr/bin/chromium';

let browser: Browser;
let result: CompareResult;
let outDir: string;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install it with apt-get install -y chromium`);
  const root = tmpDir('mlactl-report-browser-');
  result = await compareRuns({ inputs: [writeRichExperiment(path.join(root, 'rich'))], baseline: 'baseline', out: path.join(root, 'out') });
  outDir = result.outDir;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
});

afterAll(async () => {
  await browser?.close();
});

test('report.html renders in Chromium: no console errors, every plot and table visible', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(msg.text());
  });
  page.on('pageerror', (err) => problems.push(err.message));
  // Any request that is not the file itself means the report is not self-contained.
  const requests: string[] = [];
  page.on('request', (req) => requests.push(req.url()));

  await page.goto(pathToFileURL(result.report).href, { waitUntil: 'load' });
  expect(problems).toEqual([]);
  expect(requests).toEqual([pathToFileURL(result.report).href]);

  const plots = page.locator('figure > svg');
  expect(await plots.count()).toBe(5);
  for (let i = 0; i < 5; i++) {
    const box = await plots.nth(i).boundingBox();
    expect(box).not.toBeNull();
    expect(box!.width).toBeGreaterThan(100);
    expect(box!.height).toBeGreaterThan(100);
  }
  const tables = page.locator('table');
  // arm groups, learning-rate sensitivity (two learning rates), downstream evaluation, differences, runs, config diff
  // (manifests agree)
  expect(await tables.count()).toBe(6);
  for (let i = 0; i < (await tables.count()); i++) {
    await tables.nth(i).scrollIntoViewIfNeeded();
    const box = await tables.nth(i).boundingBox();
    expect(box).not.toBeNull();
    expect(box!.width).toBeGreaterThan(50);
    expect(box!.height).toBeGreaterThan(20);
  }
  // The plots' text is real text in the page, readable by the browser.
  expect(await page.locator('figure#plot-loss').innerText()).toContain('tokens seen');

  const screenshot = path.join(outDir, 'report-screenshot.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  expect(fs.statSync(screenshot).size).toBeGreaterThan(10000);
  await page.close();
});
