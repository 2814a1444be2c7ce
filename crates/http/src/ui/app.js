// Sextant Inference Insights: a dependency-free dashboard over the
// Prometheus HTTP API that this server answers. Every panel shows its PromQL.
'use strict';

const N = {
  ttft: ['vllm:time_to_first_token_seconds_bucket', 'sglang:time_to_first_token_seconds_bucket'],
  itl: ['vllm:inter_token_latency_seconds_bucket', 'sglang:inter_token_latency_seconds_bucket'],
  e2e: ['vllm:e2e_request_latency_seconds_bucket', 'sglang:e2e_request_latency_seconds_bucket'],
  requests: ['vllm:e2e_request_latency_seconds_count', 'sglang:e2e_request_latency_seconds_count'],
  gen: ['vllm:generation_tokens_total', 'sglang:generation_tokens_total'],
  prompt: ['vllm:prompt_tokens_total', 'sglang:prompt_tokens_total'],
  running: ['vllm:num_requests_running', 'sglang:num_running_reqs'],
  waiting: ['vllm:num_requests_waiting', 'sglang:num_queue_reqs'],
  kv: ['vllm:kv_cache_usage_perc', 'sglang:token_usage'],
};

const state = {
  view: 'performance',
  range: 3600,
  live: true,
  filters: { endpoint: '', inference_component: '', model_name: '' },
  inflight: false,
  pending: null,
  // Bumped by every change of view, range or filter; a refresh marks the
  // page refreshed only if nothing changed while it ran, so that
  // data-refreshed always describes what the current choices show.
  version: 0,
  demo: null,
};

// ---------- PromQL helpers ----------

function quote(v) {
  return '"' + String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') + '"';
}

// A selector for one metric name or several alternatives, with the filters.
function sel(names, extra) {
  const m = [];
  let head = '';
  if (Array.isArray(names)) m.push('__name__=~' + quote(names.join('|')));
  else head = names;
  for (const [k, v] of Object.entries(state.filters)) if (v) m.push(k + '=' + quote(v));
  if (extra) m.push(extra);
  return head + '{' + m.join(', ') + '}';
}

function rate(names, extra, w) {
  return 'rate(' + sel(names, extra) + '[' + (w || '5m') + '])';
}

function hq(q, names, by) {
  return 'histogram_quantile(' + q + ', sum by (le' + (by ? ', ' + by : '') + ') (' + rate(names) + '))';
}

// p50, p90 and p99 from one evaluation of the bucket rates.
function quantiles(names) {
  return { expr: 'histogram_quantiles(sum by (le) (' + rate(names) + '), "q", 0.5, 0.9, 0.99)',
    legend: (m) => 'p' + Math.round(Number(m.q) * 100) };
}

// ---------- HTTP ----------

// At most this many requests at once, so the first panels draw early on a
// busy server instead of every panel finishing late together.
const MAX_INFLIGHT = 4;
let inflight = 0;
const waiting = [];

async function api(path, params, method) {
  if (inflight >= MAX_INFLIGHT) await new Promise((r) => waiting.push(r));
  inflight++;
  try {
    return await apiNow(path, params, method);
  } finally {
    inflight--;
    const next = waiting.shift();
    if (next) next();
  }
}

async function apiNow(path, params, method) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => body.append(k, x));
    else if (v !== undefined && v !== null) body.append(k, v);
  }
  const m = method || 'POST';
  const url = m === 'GET' || m === 'DELETE' ? path + (body.toString() ? '?' + body : '') : path;
  const opts = { method: m };
  if (m === 'POST') {
    opts.body = body;
    opts.headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  }
  const r = await fetch(url, opts);
  let j;
  try {
    j = await r.json();
  } catch (e) {
    throw new Error('HTTP ' + r.status + ' from ' + path);
  }
  if (j.status !== 'success') throw new Error(j.error || 'HTTP ' + r.status);
  return j.data;
}

const timing = { queries: 0, slowest: 0 };

async function timed(p) {
  const t0 = performance.now();
  try {
    return await p;
  } finally {
    timing.queries++;
    timing.slowest = Math.max(timing.slowest, performance.now() - t0);
  }
}

function window_() {
  // About 120 points a line: enough for a panel's width, half the work of 240.
  const step = Math.max(15, Math.ceil(state.range / 120));
  const end = Math.floor(Date.now() / 1000 / step) * step;
  return { start: end - state.range, end, step };
}

function queryRange(expr) {
  const w = window_();
  return timed(api('/api/v1/query_range', { query: expr, start: w.start, end: w.end, step: w.step }));
}

function queryInstant(expr) {
  return timed(api('/api/v1/query', { query: expr }));
}

// ---------- formatting ----------

function si(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function fmt(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : '-Inf';
  if (v === 0) return '0';
  switch (unit) {
    case 's':
      if (Math.abs(v) < 1) return (v * 1000).toFixed(Math.abs(v) < 0.01 ? 2 : 0) + ' ms';
      return v.toFixed(2) + ' s';
    case 'ratio':
      return (v * 100).toFixed(1) + '%';
    case 'percent':
      return v.toFixed(0) + '%';
    case 'MiB':
      return si(v) + ' MiB';
    case 'W':
      return si(v) + ' W';
    case '/s':
      return si(v) + '/s';
    case 'tok/s':
      return si(v) + ' tok/s';
    default:
      return si(v);
  }
}

function labelText(metric, keys) {
  const m = metric || {};
  const ks = keys || Object.keys(m).filter((k) => k !== '__name__');
  const parts = ks.map((k) => m[k]).filter((x) => x !== undefined && x !== '');
  if (parts.length) return parts.join(' · ');
  return m.__name__ || '{}';
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// ---------- charts ----------

const COLORS = ['#4fb3ff', '#ffb547', '#4fd18b', '#ff5d5d', '#c38bff', '#5ee0d8', '#ff8bd1', '#d8e05e',
  '#8fa3ff', '#ff9a5e', '#9be07a', '#e0e0e0'];
const SVGNS = 'http://www.w3.org/2000/svg';

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// series: [{name, points: [[t, v], ...]}]
function drawChart(box, series, unit, w) {
  box.textContent = '';
  const W = Math.max(box.clientWidth || 440, 200);
  const H = box.classList.contains('big') ? 320 : 180;
  const L = 62, R = 8, T = 8, B = 20;
  const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const [, v] of s.points) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  lo = Math.min(0, lo);
  if (hi <= lo) hi = lo + 1;
  hi = hi + (hi - lo) * 0.05;
  const x = (t) => L + ((t - w.start) / Math.max(1, w.end - w.start)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    svg.append(svgEl('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'axis' }));
    const t = svgEl('text', { x: L - 6, y: y(v) + 3, 'text-anchor': 'end', class: 'tick' });
    t.textContent = fmt(v, unit);
    svg.append(t);
  }
  for (let i = 0; i <= 4; i++) {
    const ts = w.start + ((w.end - w.start) * i) / 4;
    const t = svgEl('text', { x: x(ts), y: H - 4, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', class: 'tick' });
    const d = new Date(ts * 1000);
    t.textContent = d.toTimeString().slice(0, 5);
    svg.append(t);
  }
  series.forEach((s, i) => {
    let d = '';
    let prev = null;
    for (const [t, v] of s.points) {
      if (!Number.isFinite(v)) { prev = null; continue; }
      const gap = prev !== null && t - prev > w.step * 1.5;
      d += (d === '' || gap ? 'M' : 'L') + x(t).toFixed(1) + ',' + y(v).toFixed(1);
      prev = t;
    }
    svg.append(svgEl('path', { d, fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 1.6 }));
  });
  const cursor = svgEl('line', { y1: T, y2: H - B, class: 'axis', visibility: 'hidden' });
  svg.append(cursor);
  box.append(svg);
  const tip = el('div', { class: 'tip' });
  tip.hidden = true;
  box.append(tip);
  svg.addEventListener('mousemove', (ev) => {
    const r = svg.getBoundingClientRect();
    const px = ((ev.clientX - r.left) / r.width) * W;
    const t = w.start + ((px - L) / (W - L - R)) * (w.end - w.start);
    const rows = [];
    series.forEach((s, i) => {
      let best = null;
      for (const p of s.points) if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
      if (best) rows.push([i, s.name, best]);
    });
    if (!rows.length) return;
    cursor.setAttribute('x1', px);
    cursor.setAttribute('x2', px);
    cursor.setAttribute('visibility', 'visible');
    tip.textContent = '';
    tip.append(el('div', { text: new Date(rows[0][2][0] * 1000).toLocaleTimeString() }));
    for (const [i, name, p] of rows.slice(0, 10)) {
      tip.append(el('div', { style: 'color:' + COLORS[i % COLORS.length], text: name + ': ' + fmt(p[1], unit) }));
    }
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX - r.left + 12, r.width - 180) + 'px';
    tip.style.top = '6px';
  });
  svg.addEventListener('mouseleave', () => { tip.hidden = true; cursor.setAttribute('visibility', 'hidden'); });
}

function legend(series) {
  const lg = el('div', { class: 'legend' });
  series.forEach((s, i) => {
    const last = s.points.length ? s.points[s.points.length - 1][1] : NaN;
    lg.append(el('span', { title: s.name }, el('i', { style: 'background:' + COLORS[i % COLORS.length] }), s.name + ' ' + fmt(last, s.unit)));
  });
  return lg;
}

function toSeries(result, legendFn, unit) {
  return result.map((r) => ({
    name: legendFn ? legendFn(r.metric) : labelText(r.metric),
    unit,
    points: r.values.map(([t, v]) => [Number(t), Number(v)]),
  }));
}

const MAX_LINES = 12;

// ---------- panels ----------

// A graph panel: queries is [{expr, legend}] where legend maps a metric to a
// name. A query with `top` instead of `expr` draws the ten instances that
// rank highest now: an instant topk picks them, a range query draws them, so
// the panel stays cheap however many replicas the fleet has.
function graph(id, title, unit, queries) {
  for (const q of queries) if (q.top) q.expr = 'topk(10, ' + q.top('') + ')';
  return { id, title, unit, kind: 'graph', queries };
}

async function rangeOf(q) {
  if (!q.top) return queryRange(q.expr);
  const now = await queryInstant(q.expr);
  const names = [...new Set(now.result.map((r) => r.metric.instance).filter(Boolean))];
  if (!names.length) return { result: [] };
  const re = names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  return queryRange(q.top('instance=~' + quote(re)));
}

// A table panel: instant queries, then `build(results)` makes the table.
function table(id, title, exprs, build) {
  return { id, title, kind: 'table', exprs, build: async () => build(await Promise.all(exprs.map((e) => queryInstant(e)))) };
}

// Tables with many columns take two grid cells.
const WIDE = new Set(['components']);

const byLabel = (k) => (m) => m[k] || '(none)';

const VIEWS = {
  performance: () => [
    graph('ttft', 'Time to first token', 's', [quantiles(N.ttft)]),
    graph('ttft-by-model', 'TTFT p99 by model', 's', [{ expr: hq('0.99', N.ttft, 'model_name'), legend: byLabel('model_name') }]),
    graph('itl', 'Inter-token latency', 's', [quantiles(N.itl)]),
    graph('e2e', 'End-to-end request latency', 's', [quantiles(N.e2e)]),
    graph('tokens', 'Generated tokens per second by model', 'tok/s', [{
      expr: 'sum by (model_name) (' + rate(N.gen) + ')', legend: byLabel('model_name') }]),
    graph('prompt-tokens', 'Prompt tokens per second by model', 'tok/s', [{
      expr: 'sum by (model_name) (' + rate(N.prompt) + ')', legend: byLabel('model_name') }]),
    graph('requests', 'Requests per second by endpoint', '/s', [{
      expr: 'sum by (endpoint) (' + rate(N.requests) + ')', legend: byLabel('endpoint') }]),
    table('components', 'Inference components', [
      'sum by (endpoint, inference_component, model_name) (' + rate(N.requests) + ')',
      hq('0.99', N.ttft, 'endpoint, inference_component, model_name'),
      hq('0.99', N.itl, 'endpoint, inference_component, model_name'),
      'sum by (endpoint, inference_component, model_name) (' + rate(N.gen) + ')',
    ], ([rps, ttft, itl, tok]) => {
      return joinRows(['endpoint', 'inference_component', 'model_name'],
        [['req/s', rps.result, '/s'], ['TTFT p99', ttft.result, 's'], ['ITL p99', itl.result, 's'], ['tokens/s', tok.result, 'tok/s']]);
    }),
  ],
  capacity: () => [
    graph('kv-cache', 'KV-cache usage, top 10 replicas now', 'ratio', [{
      top: (x) => 'max by (instance, inference_component) (' + sel(N.kv, x) + ')',
      legend: (m) => m.instance + ' · ' + m.inference_component }]),
    graph('running', 'Running requests by component', '', [{
      expr: 'sum by (inference_component) (' + sel(N.running) + ')', legend: byLabel('inference_component') }]),
    graph('waiting', 'Waiting requests, top 10 replicas now', '', [{
      top: (x) => 'sum by (instance, inference_component) (' + sel(N.waiting, x) + ')',
      legend: (m) => m.instance + ' · ' + m.inference_component }]),
    graph('gpu-util', 'GPU utilisation by zone', 'percent', [{
      expr: 'avg by (availability_zone) (' + sel('DCGM_FI_DEV_GPU_UTIL') + ')', legend: byLabel('availability_zone') }]),
    graph('gpu-memory', 'GPU memory used by zone', 'ratio', [{
      expr: 'sum by (availability_zone) (' + sel('DCGM_FI_DEV_FB_USED') + ') / sum by (availability_zone) (' +
        sel('DCGM_FI_DEV_FB_USED') + ' + ' + sel('DCGM_FI_DEV_FB_FREE') + ')', legend: byLabel('availability_zone') }]),
    graph('gpu-power', 'GPU power by zone', 'W', [{
      expr: 'sum by (availability_zone) (' + sel('DCGM_FI_DEV_POWER_USAGE') + ')', legend: byLabel('availability_zone') }]),
    graph('zone-traffic', 'Traffic by availability zone (generated tokens/s)', 'tok/s', [{
      expr: 'sum by (availability_zone) (' + rate(N.gen) + ')', legend: byLabel('availability_zone') }]),
    table('placement', 'Placement: replicas per component and zone', [
      'count by (inference_component, availability_zone) (' + sel(N.running) + ')',
    ], ([r]) => pivot(r.result, 'inference_component', 'availability_zone')),
  ],
  reliability: () => [
    graph('finish-reasons', 'Finished requests by reason', '/s', [{
      expr: 'sum by (finished_reason) (' + rate('vllm:request_success_total') + ')', legend: byLabel('finished_reason') }]),
    graph('abort-ratio', 'Aborted share of requests by model', 'ratio', [{
      expr: 'sum by (model_name) (' + rate('vllm:request_success_total', 'finished_reason="abort"') +
        ') / sum by (model_name) (' + rate('vllm:request_success_total') + ')', legend: byLabel('model_name') }]),
    graph('preemptions', 'Preemptions per second by component', '/s', [{
      expr: 'sum by (inference_component) (' + rate('vllm:num_preemptions_total') + ') > 0',
      legend: byLabel('inference_component') }]),
    graph('xid', 'GPU XID errors (last XID code)', '', [{
      expr: 'max by (Hostname, gpu) (' + sel('DCGM_FI_DEV_XID_ERRORS') + ') > 0',
      legend: (m) => m.Hostname + ' gpu ' + m.gpu }]),
    graph('reporting', 'Replicas and GPUs reporting', '', [
      { expr: 'count(' + sel(N.running) + ')', legend: () => 'replicas reporting' },
      { expr: 'count(' + sel('up', 'job=~"vllm|sglang"') + ' == 0)', legend: () => 'replicas down (up == 0)' },
      { expr: 'count(' + sel('DCGM_FI_DEV_GPU_UTIL') + ')', legend: () => 'GPUs reporting' },
    ]),
    table('silent', 'Stopped reporting in the last hour', [
      'max by (instance, inference_component) (last_over_time(' + sel(N.running) + '[1h])) unless ' +
        'max by (instance, inference_component) (' + sel(N.running) + ')',
      'max by (Hostname, gpu, UUID) (last_over_time(' + sel('DCGM_FI_DEV_GPU_UTIL') + '[1h])) unless ' +
        'max by (Hostname, gpu, UUID) (' + sel('DCGM_FI_DEV_GPU_UTIL') + ')',
    ], ([reps, gpus]) => {
      const rows = reps.result.map((r) => ['replica', r.metric.instance + ' (' + r.metric.inference_component + ')'])
        .concat(gpus.result.map((r) => ['GPU', r.metric.Hostname + ' gpu ' + r.metric.gpu + ' ' + r.metric.UUID]));
      return { head: ['what', 'which'], rows };
    }),
    { id: 'cardinality', title: 'Store cardinality', kind: 'table', exprs: [], note: 'GET /api/v1/status/tsdb?limit=10', build: async () => {
      const d = await timed(api('/api/v1/status/tsdb', { limit: 10 }, 'GET'));
      const rows = [['all series in the head', String(d.headStats.numSeries)]];
      for (const x of d.seriesCountByMetricName || []) rows.push([x.name, String(x.value)]);
      return { head: ['metric name', 'series'], rows, numeric: [1] };
    } },
  ],
};

// Queries that look for a problem; each result row becomes a finding.
const FINDINGS = {
  performance: () => [
    { sev: 'crit', expr: '(' + hq('0.99', N.ttft, 'inference_component, model_name') + ' / ' +
        hq('0.99', N.ttft, 'inference_component, model_name').replace('[5m]', '[5m] offset 1h') + ') > 2',
      text: (m, v) => `TTFT p99 of ${m.model_name} on ${m.inference_component} is ${v.toFixed(1)}× what it was an hour ago` },
    { sev: 'warn', expr: hq('0.99', N.ttft, 'inference_component, model_name') + ' > 5',
      text: (m, v) => `TTFT p99 of ${m.model_name} on ${m.inference_component} is ${fmt(v, 's')}, above 5 s` },
  ],
  capacity: () => [
    { sev: 'crit', expr: 'max by (instance, inference_component, model_name) (' + sel(N.kv) + ') > 0.95',
      text: (m, v) => `KV cache ${fmt(v, 'ratio')} full on replica ${m.instance} (${m.inference_component}, ${m.model_name})` },
    { sev: 'warn', expr: 'sum by (instance, inference_component) (' + sel(N.waiting) + ') > 20',
      text: (m, v) => `${v.toFixed(0)} requests waiting on replica ${m.instance} (${m.inference_component})` },
    { sev: 'warn', expr: 'sum by (availability_zone) (' + rate(N.gen) + ') / scalar(sum(' + rate(N.gen) + ')) > 0.5',
      text: (m, v) => `zone ${m.availability_zone} serves ${fmt(v, 'ratio')} of all generated tokens` },
  ],
  reliability: () => [
    { sev: 'crit', expr: 'max by (Hostname, gpu) (max_over_time(' + sel('DCGM_FI_DEV_XID_ERRORS') + '[1h])) > 0',
      text: (m, v) => `XID ${v.toFixed(0)} on GPU ${m.gpu} of ${m.Hostname} in the last hour` },
    { sev: 'crit', expr: 'max by (Hostname, gpu) (last_over_time(' + sel('DCGM_FI_DEV_GPU_UTIL') + '[1h])) unless ' +
        'max by (Hostname, gpu) (' + sel('DCGM_FI_DEV_GPU_UTIL') + ')',
      text: (m) => `GPU ${m.gpu} of ${m.Hostname} stopped reporting` },
    { sev: 'crit', expr: 'max by (instance, inference_component) (last_over_time(' + sel(N.running) + '[1h])) unless ' +
        'max by (instance, inference_component) (' + sel(N.running) + ')',
      text: (m) => `replica ${m.instance} (${m.inference_component}) stopped reporting` },
    { sev: 'warn', expr: 'sum by (model_name) (' + rate('vllm:request_success_total', 'finished_reason="abort"') +
        ') / sum by (model_name) (' + rate('vllm:request_success_total') + ') > 0.05',
      text: (m, v) => `${fmt(v, 'ratio')} of requests to ${m.model_name} are aborted` },
  ],
};

function joinRows(keys, cols) {
  const rows = new Map();
  cols.forEach(([, result, unit], ci) => {
    for (const r of result) {
      const k = keys.map((x) => r.metric[x] || '').join('\u0000');
      if (!rows.has(k)) rows.set(k, { keys: keys.map((x) => r.metric[x] || ''), vals: cols.map(() => '–') });
      rows.get(k).vals[ci] = fmt(Number(r.value[1]), unit);
    }
  });
  const sorted = [...rows.values()].sort((a, b) => a.keys.join(' ').localeCompare(b.keys.join(' ')));
  return {
    head: keys.concat(cols.map((c) => c[0])),
    rows: sorted.map((r) => r.keys.concat(r.vals)),
    numeric: cols.map((_, i) => keys.length + i),
  };
}

function pivot(result, rowKey, colKey) {
  const cols = [...new Set(result.map((r) => r.metric[colKey] || ''))].sort();
  const rows = new Map();
  for (const r of result) {
    const k = r.metric[rowKey] || '';
    if (!rows.has(k)) rows.set(k, cols.map(() => '0'));
    rows.get(k)[cols.indexOf(r.metric[colKey] || '')] = r.value[1];
  }
  return {
    head: [rowKey].concat(cols),
    rows: [...rows.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([k, v]) => [k].concat(v)),
    numeric: cols.map((_, i) => i + 1),
  };
}

function renderTable(t) {
  const num = new Set(t.numeric || []);
  const tb = el('table', {}, el('thead', {}, el('tr', {}, ...t.head.map((h, i) => el('th', { class: num.has(i) ? 'num' : '', text: h })))));
  const body = el('tbody');
  for (const r of t.rows) body.append(el('tr', {}, ...r.map((c, i) => el('td', { class: num.has(i) ? 'num' : '', text: c }))));
  tb.append(body);
  return tb;
}

function exprBlock(exprs, note) {
  const d = el('details', {}, el('summary', { text: exprs.length ? 'PromQL' : 'Source' }));
  if (note) d.append(el('code', { text: note }));
  for (const e of exprs) {
    const a = el('a', { href: '#explore', text: 'open in Explore' });
    a.addEventListener('click', () => { document.getElementById('expr').value = e; setTimeout(runExplore, 0); });
    d.append(el('code', { text: e }), a);
  }
  return d;
}

async function fillPanel(node, p) {
  const box = node.querySelector('.chart');
  node.dataset.state = 'loading';
  try {
    if (p.kind === 'graph') {
      const w = window_();
      const results = await Promise.all(p.queries.map(rangeOf));
      let series = [];
      results.forEach((r, i) => { series = series.concat(toSeries(r.result, p.queries[i].legend, p.unit)); });
      const last = (s) => { for (let i = s.points.length - 1; i >= 0; i--) if (Number.isFinite(s.points[i][1])) return s.points[i][1]; return -Infinity; };
      const total = series.length;
      if (total > MAX_LINES) series = series.sort((a, b) => last(b) - last(a)).slice(0, MAX_LINES);
      node.dataset.series = String(total);
      node.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
      node.dataset.legend = series.map((s) => s.name).join('\n');
      if (!total) {
        box.textContent = '';
        box.append(el('div', { class: 'empty', text: 'No data' }));
        node.querySelector('.legend')?.remove();
        node.dataset.state = 'empty';
        return;
      }
      drawChart(box, series, p.unit, w);
      node.querySelector('.legend')?.remove();
      const lg = legend(series);
      if (total > MAX_LINES) lg.append(el('span', { text: `+${total - MAX_LINES} more` }));
      box.after(lg);
      node.dataset.state = 'ok';
    } else {
      const t = await p.build();
      box.textContent = '';
      node.dataset.series = String(t.rows.length);
      node.dataset.legend = t.rows.map((r) => r.join(' ')).join('\n');
      if (!t.rows.length) {
        box.append(el('div', { class: 'empty', text: 'Nothing to show' }));
        node.dataset.state = 'empty';
      } else {
        box.append(renderTable(t));
        node.dataset.state = 'ok';
      }
    }
  } catch (e) {
    box.textContent = '';
    box.append(el('div', { class: 'error', text: String(e.message || e) }));
    node.dataset.state = 'error';
  }
}

function panelExprs(p) {
  if (p.kind === 'graph') return p.queries.map((q) => (q.top ? q.expr + '\n  then, over the range: ' + q.top('instance=~"<those>"') : q.expr));
  return p.exprs || [];
}

function buildView() {
  const view = document.getElementById('view');
  view.textContent = '';
  if (state.view === 'explore') return;
  for (const p of VIEWS[state.view]()) {
    const node = el('div', { class: 'panel' + (WIDE.has(p.id) ? ' wide' : ''), 'data-panel': p.id }, el('h3', { text: p.title }), el('div', { class: 'chart' }));
    node.append(exprBlock(panelExprs(p), p.note));
    view.append(node);
  }
}

async function refreshFindings() {
  const box = document.getElementById('findings');
  if (state.view === 'explore') { box.textContent = ''; return; }
  const defs = FINDINGS[state.view]();
  const results = await Promise.all(defs.map((f) => queryInstant(f.expr).then((d) => d.result).catch(() => [])));
  box.textContent = '';
  let n = 0;
  results.forEach((res, i) => {
    for (const r of res) {
      const f = defs[i];
      const item = el('div', { class: 'finding ' + f.sev, title: f.expr, text: f.text(r.metric, Number(r.value[1])) });
      box.append(item);
      n++;
    }
  });
  if (!n) box.append(el('div', { class: 'finding none', text: 'No problems found in this view.' }));
  box.dataset.count = String(n);
}

async function refresh(rebuild) {
  if (state.inflight) {
    // A view switch or filter change during a refresh runs right after it,
    // so that the newest request wins (and a rebuild is never lost).
    state.pending = { rebuild: Boolean(rebuild) || Boolean(state.pending && state.pending.rebuild) };
    return;
  }
  state.inflight = true;
  const version = state.version;
  timing.queries = 0;
  timing.slowest = 0;
  const t0 = performance.now();
  try {
    if (rebuild) buildView();
    if (state.view !== 'explore') {
      const panels = VIEWS[state.view]();
      const nodes = [...document.querySelectorAll('#view .panel')];
      await Promise.all([refreshFindings(), ...panels.map((p, i) => fillPanel(nodes[i], p))]);
    }
  } finally {
    state.inflight = false;
  }
  if (state.pending) {
    const next = state.pending;
    state.pending = null;
    return refresh(next.rebuild);
  }
  if (version !== state.version) return;
  document.getElementById('status').textContent =
    `Updated ${new Date().toLocaleTimeString()} · ${timing.queries} queries in ${Math.round(performance.now() - t0)} ms · slowest ${Math.round(timing.slowest)} ms`;
  document.body.dataset.refreshed = String(Date.now());
}

// ---------- filters ----------

async function loadFilters() {
  const selects = [...document.querySelectorAll('.controls select[data-label]')];
  await Promise.all(selects.map(async (s) => {
    const label = s.dataset.label;
    const saved = state.filters[label];
    // Values consistent with the other filters.
    const others = Object.assign({}, state.filters, { [label]: '' });
    const m = [];
    for (const [k, v] of Object.entries(others)) if (v) m.push(k + '=' + quote(v));
    const match = '{__name__=~' + quote(N.running.join('|')) + (m.length ? ', ' + m.join(', ') : '') + '}';
    let values = [];
    try {
      values = await api('/api/v1/label/' + encodeURIComponent(label) + '/values', { 'match[]': match }, 'GET');
    } catch (e) {
      values = [];
    }
    s.textContent = '';
    s.append(el('option', { value: '', text: 'All' }));
    for (const v of values) s.append(el('option', { value: v, text: v }));
    s.value = values.includes(saved) ? saved : '';
  }));
}

// ---------- explore ----------

async function runExplore(ev) {
  if (ev) ev.preventDefault();
  const expr = document.getElementById('expr').value.trim();
  const out = document.getElementById('explore-out');
  const err = document.getElementById('explore-error');
  const meta = document.getElementById('explore-meta');
  if (!expr) return;
  location.hash = '#explore';
  const mode = document.querySelector('input[name=mode]:checked').value;
  err.hidden = true;
  out.textContent = '';
  const t0 = performance.now();
  try {
    if (mode === 'table') {
      const d = await queryInstant(expr);
      let rows;
      if (d.resultType === 'vector') rows = d.result.map((r) => [fmtMetric(r.metric), r.value[1]]);
      else if (d.resultType === 'matrix') rows = d.result.map((r) => [fmtMetric(r.metric), r.values.map((v) => v[1] + ' @' + v[0]).join('\n')]);
      else rows = [[d.resultType, String(d.result[1])]];
      out.append(renderTable({ head: ['series', 'value'], rows, numeric: [1] }));
      meta.textContent = `${rows.length} result${rows.length === 1 ? '' : 's'} · ${Math.round(performance.now() - t0)} ms`;
      out.dataset.rows = String(rows.length);
    } else {
      const w = window_();
      const d = await queryRange(expr);
      const series = toSeries(d.result, fmtMetric, '').slice(0, 50);
      const node = el('div', { class: 'panel', 'data-panel': 'explore-graph' }, el('div', { class: 'chart big' }));
      out.append(node);
      if (series.length) { drawChart(node.querySelector('.chart'), series, '', w); node.append(legend(series)); }
      else node.querySelector('.chart').append(el('div', { class: 'empty', text: 'No data' }));
      meta.textContent = `${d.result.length} series · ${Math.round(performance.now() - t0)} ms`;
      out.dataset.rows = String(d.result.length);
    }
  } catch (e) {
    err.textContent = String(e.message || e);
    err.hidden = false;
    out.dataset.rows = '0';
  }
}

function fmtMetric(m) {
  const name = m.__name__ || '';
  const ls = Object.keys(m).filter((k) => k !== '__name__').sort().map((k) => k + '=' + quote(m[k]));
  return name + '{' + ls.join(', ') + '}';
}

// ---------- demo ----------

async function loadDemo() {
  try {
    state.demo = await api('/api/v1/demo', {}, 'GET');
  } catch (e) {
    state.demo = null;
    return;
  }
  const bar = document.getElementById('demo');
  bar.hidden = false;
  const d = state.demo;
  document.getElementById('demo-info').textContent =
    `Demo fleet: ${d.series} series, ${d.replicas} replicas, every ${d.interval_seconds} s` + (d.backfilled ? '' : ' (backfilling…)');
  const kind = document.getElementById('demo-kind');
  if (!kind.options.length) for (const k of d.incident_kinds) kind.append(el('option', { value: k, text: k }));
}

async function injectIncident() {
  const kind = document.getElementById('demo-kind').value;
  const target = document.getElementById('demo-target').value || '0';
  const st = document.getElementById('demo-status');
  try {
    const x = await api('/api/v1/demo/incidents?kind=' + encodeURIComponent(kind) + '&target=' + encodeURIComponent(target), {});
    st.textContent = 'Injected: ' + x.description;
  } catch (e) {
    st.textContent = String(e.message || e);
  }
  setTimeout(() => refresh(false), 1500);
}

async function endIncidents() {
  const st = document.getElementById('demo-status');
  try {
    const d = await api('/api/v1/demo/incidents', {}, 'DELETE');
    st.textContent = `Ended ${d.ended} incident(s)`;
  } catch (e) {
    st.textContent = String(e.message || e);
  }
}

// ---------- wiring ----------

function setView() {
  const v = (location.hash || '#performance').slice(1);
  state.view = VIEWS[v] || v === 'explore' ? v : 'performance';
  state.version++;
  for (const a of document.querySelectorAll('#tabs a')) a.classList.toggle('active', a.dataset.view === state.view);
  document.getElementById('explore').hidden = state.view !== 'explore';
  document.getElementById('view').hidden = state.view === 'explore';
  document.getElementById('findings').hidden = state.view === 'explore';
  refresh(true);
}

function init() {
  for (const s of document.querySelectorAll('.controls select[data-label]')) {
    s.addEventListener('change', async () => {
      state.filters[s.dataset.label] = s.value;
      state.version++;
      await loadFilters();
      refresh(true);
    });
  }
  document.getElementById('range').addEventListener('change', (e) => { state.range = Number(e.target.value); state.version++; refresh(true); });
  document.getElementById('live').addEventListener('change', (e) => { state.live = e.target.checked; });
  document.getElementById('explore-form').addEventListener('submit', runExplore);
  document.getElementById('demo-inject').addEventListener('click', injectIncident);
  document.getElementById('demo-end').addEventListener('click', endIncidents);
  window.addEventListener('hashchange', setView);
  let resizeTimer = null;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => refresh(false), 300); });
  setInterval(() => {
    if (state.live && !document.hidden) { refresh(false); loadDemo(); }
  }, 15000);
  Promise.all([loadFilters(), loadDemo()]).finally(setView);
}

init();
