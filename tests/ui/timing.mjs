// Times the dashboard's views in headless Chromium: for each view, loads it
// `runs` times and prints the median time from navigation until every panel
// and finding has drawn, and the slowest query the page reported; then waits
// for the view's next live refresh and prints how long that took.
// Usage: node timing.mjs <base-url> [runs]
import { chromium } from 'playwright-core';

const [base, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 5);
const browser = await chromium.launch({
  executablePath: process.env.SEXTANT_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log('| view | median load (ms) | median slowest query (ms) | queries | live refresh (ms) |');
console.log('|---|---:|---:|---:|---:|');
for (const view of ['performance', 'capacity', 'reliability']) {
  const loads = [];
  const slowest = [];
  let queries = 0;
  for (let i = 0; i < runs; i++) {
    await page.goto('about:blank');
    const t0 = Date.now();
    await page.goto(base + '/#' + view);
    await page.waitForFunction(() => document.body.dataset.refreshed &&
      !document.querySelector('[data-panel][data-state=loading]'), null, { timeout: 120000 });
    loads.push(Date.now() - t0);
    const st = await page.textContent('#status');
    const m = /(\d+) queries in \d+ ms · slowest (\d+) ms/.exec(st);
    if (m) { queries = Number(m[1]); slowest.push(Number(m[2])); }
  }
  // The page refreshes itself every 15 s; time the next refresh.
  const before = await page.evaluate(() => document.body.dataset.refreshed);
  await page.waitForFunction((b) => document.body.dataset.refreshed !== b, before, { timeout: 60000 });
  const st = await page.textContent('#status');
  const r = /queries in (\d+) ms/.exec(st);
  console.log(`| ${view} | ${median(loads)} | ${median(slowest)} | ${queries} | ${r ? r[1] : '?'} |`);
}
await browser.close();
