// End-to-end test of the built-in dashboard in headless Chromium.
// Usage: node dashboard.mjs <base-url> <artifacts-dir>
// The server must run the demo fleet with a TTFT regression and a GPU XID
// incident in its recent past. Exits non-zero with a reason on any failure.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const [base, outDir] = process.argv.slice(2);
if (!base || !outDir) {
  console.error('usage: node dashboard.mjs <base-url> <artifacts-dir>');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const executablePath = process.env.SEXTANT_CHROMIUM || '/usr/bin/chromium';

const checks = [];
function check(cond, what) {
  checks.push([!!cond, what]);
  console.log((cond ? 'ok   ' : 'FAIL ') + what);
  if (!cond) throw new Error('check failed: ' + what);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 1100 } });
  const foreign = [];
  const consoleErrors = [];
  page.on('request', (r) => { if (!r.url().startsWith(base) && !r.url().startsWith('data:')) foreign.push(r.url()); });
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // Waits until the view has refreshed after `since` and no panel is loading.
  async function settled(since) {
    await page.waitForFunction((t) => Number(document.body.dataset.refreshed || 0) > t &&
      !document.querySelector('[data-panel][data-state=loading]') &&
      document.querySelectorAll('#view .panel').length > 0, since, { timeout: 60000 });
  }
  const now = () => page.evaluate(() => Date.now());
  async function panels() {
    return page.$$eval('#view .panel', (ns) => ns.map((n) => ({
      id: n.dataset.panel, state: n.dataset.state, series: Number(n.dataset.series || 0),
      points: Number(n.dataset.points || 0), legend: n.dataset.legend || '',
      paths: n.querySelectorAll('svg path').length, exprs: n.querySelectorAll('details code').length,
    })));
  }
  async function findings() {
    return page.$$eval('#findings .finding', (ns) => ns.map((n) => n.textContent));
  }
  async function waitFinding(re, what) {
    const deadline = Date.now() + 60000;
    for (;;) {
      const f = await findings();
      if (f.some((x) => re.test(x))) return f;
      if (Date.now() > deadline) { check(false, what + ' (findings: ' + JSON.stringify(f) + ')'); }
      await page.waitForTimeout(1000);
    }
  }
  async function checkView(name, allowedEmpty) {
    const ps = await panels();
    check(ps.length >= 6, `${name}: ${ps.length} panels drawn`);
    for (const p of ps) {
      if (allowedEmpty.includes(p.id) && p.state === 'empty') continue;
      check(p.state === 'ok' && p.series > 0, `${name}/${p.id}: has data (${p.state}, ${p.series} series)`);
      check(p.exprs > 0, `${name}/${p.id}: shows its PromQL or source`);
    }
    return ps;
  }

  // Performance.
  let t = await now();
  await page.goto(base + '/#performance');
  await settled(t);
  let ps = await checkView('performance', []);
  const tt = ps.find((p) => p.id === 'ttft');
  check(tt.paths >= 3 && tt.points > 30, 'performance/ttft: p50, p90 and p99 lines drawn');
  let f = await waitFinding(/TTFT p99 of .* on ic-00-1 is [0-9.]+× what it was an hour ago/, 'performance: the TTFT regression on ic-00-1 is found');
  await page.screenshot({ path: path.join(outDir, 'performance.png'), fullPage: true });

  // A filter changes the data.
  const byModel = ps.find((p) => p.id === 'ttft-by-model');
  check(byModel.series >= 3, `performance: TTFT by model shows ${byModel.series} models unfiltered`);
  const models = await page.$$eval('#f-model option', (os) => os.map((o) => o.value).filter(Boolean));
  check(models.length >= 3, `filters: ${models.length} models discovered from labels`);
  const model = models[0];
  // Chosen while a refresh of the unfiltered view is in flight, with the
  // filter lists slow to load so that this refresh ends first: its end must
  // not pass for the filtered view's.
  // The panels' queries are held back a little too, so that the refresh is
  // surely still in flight when the filter is chosen (a fast server could
  // otherwise finish it in between, and the test would see its end).
  const slowLabels = async (route) => { await new Promise((r) => setTimeout(r, 2000)); await route.continue(); };
  const slowQueries = async (route) => { await new Promise((r) => setTimeout(r, 500)); await route.continue(); };
  await page.route('**/api/v1/label/**', slowLabels);
  await page.route('**/api/v1/query*', slowQueries);
  await page.evaluate(() => window.dispatchEvent(new Event('resize')));
  await page.waitForFunction(() => document.querySelector('[data-panel][data-state=loading]'), null, { timeout: 10000 });
  t = await now();
  await page.selectOption('#f-model', model);
  await settled(t);
  await page.unroute('**/api/v1/label/**', slowLabels);
  await page.unroute('**/api/v1/query*', slowQueries);
  ps = await panels();
  const filtered = ps.find((p) => p.id === 'ttft-by-model');
  check(filtered.series === 1 && filtered.legend === model, `filters: TTFT by model shows only ${model}`);
  const comps = await page.$$eval('#f-component option', (os) => os.map((o) => o.value).filter(Boolean));
  check(comps.length > 0 && comps.length < 12, `filters: components narrowed to the model's (${comps.length})`);
  // Capacity, chosen while the refresh that clearing the filter starts is
  // still running: the view must switch all the same. Then an incident
  // injected on command from the demo bar.
  t = await now();
  await page.selectOption('#f-model', '');
  await page.goto(base + '/#capacity');
  await settled(t);
  ps = await panels();
  check(ps.some((p) => p.id === 'kv-cache') && !ps.some((p) => p.id === 'ttft-by-model'),
    'capacity: the view switches even when chosen during a refresh');
  await checkView('capacity', []);
  await page.screenshot({ path: path.join(outDir, 'capacity.png'), fullPage: true });
  check(await page.isVisible('#demo'), 'demo bar is shown');
  await page.selectOption('#demo-kind', 'kv-cache-saturation');
  await page.fill('#demo-target', '3');
  await page.click('#demo-inject');
  await page.waitForFunction(() => /Injected: KV cache saturated/.test(document.getElementById('demo-status').textContent), null, { timeout: 10000 });
  const desc = await page.textContent('#demo-status');
  const instance = /replica (\S+)/.exec(desc)[1];
  f = await waitFinding(new RegExp('KV cache [0-9.]+% full on replica ' + instance.replace(/\./g, '\\.')), `capacity: the injected KV saturation on ${instance} is found`);
  ps = await panels();
  const kv = ps.find((p) => p.id === 'kv-cache');
  check(kv.legend.includes(instance), 'capacity: the saturated replica is among the top KV-cache replicas');
  await page.screenshot({ path: path.join(outDir, 'capacity-incident.png'), fullPage: true });

  // Reliability.
  t = await now();
  await page.goto(base + '/#reliability');
  await settled(t);
  await checkView('reliability', ['preemptions']);
  f = await waitFinding(/XID 79 on GPU 0 of node-/, 'reliability: the XID error is found');
  f = await waitFinding(/GPU 0 of node-\S+ stopped reporting/, 'reliability: the GPU that fell off is found');
  await page.screenshot({ path: path.join(outDir, 'reliability.png'), fullPage: true });

  // Explore: a table, a graph, an error with its position.
  await page.goto(base + '/#explore');
  await page.fill('#expr', 'sum by (availability_zone) (rate(vllm:generation_tokens_total[5m]))');
  await page.click('#run');
  await page.waitForFunction(() => document.getElementById('explore-out').dataset.rows !== undefined, null, { timeout: 20000 });
  const rows = Number(await page.getAttribute('#explore-out', 'data-rows'));
  check(rows === 3, `explore: table of ${rows} zones`);
  await page.check('input[name=mode][value=graph]');
  await page.click('#run');
  await page.waitForSelector('#explore-out svg path', { timeout: 20000 });
  check((await page.$$('#explore-out svg path')).length >= 3, 'explore: graph of the three zones');
  await page.screenshot({ path: path.join(outDir, 'explore.png'), fullPage: true });
  check(consoleErrors.length === 0, 'no console errors: ' + consoleErrors.slice(0, 3).join(' | '));
  await page.fill('#expr', 'sum by (zone (up)');
  await page.click('#run');
  await page.waitForSelector('#explore-error:not([hidden])', { timeout: 20000 });
  const err = await page.textContent('#explore-error');
  check(/\d/.test(err) && err.length > 10, 'explore: a bad query shows its error: ' + err.trim());

  check(foreign.length === 0, 'no request leaves the server (offline): ' + foreign.slice(0, 3).join(' '));
} catch (e) {
  failed = true;
  console.error(String(e.stack || e));
} finally {
  await browser.close();
}
console.log(`${checks.filter((c) => c[0]).length} checks passed, ${checks.filter((c) => !c[0]).length} failed`);
process.exit(failed ? 1 : 0);
