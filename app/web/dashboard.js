// The dashboard: polls /api/memory/stats and draws the last samples as SVG
// line charts. ?interval=<ms> changes the poll interval (default 2000).
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const MAX_POINTS = 150;
const params = new URLSearchParams(location.search);
const interval = Math.max(200, Number.parseInt(params.get('interval'), 10) || 2000);

// Each chart plots one or two series picked from a stats sample.
const charts = [
  { id: 'instances', title: 'In-memory instances', series: [(s) => s.live.instanceCount] },
  { id: 'sessions', title: 'Stored sessions', series: [(s) => s.hydration.totalSessions] },
  { id: 'clients', title: 'Connected clients', series: [(s) => s.live.clientCount] },
  { id: 'heap', title: 'Heap in use (MiB)', series: [(s) => s.runtime.heapInuseBytes / 1048576], digits: 1 },
  {
    id: 'removed',
    title: 'Sweeps: sessions removed in total',
    series: [(s) => s.jobs.ageSweep.totalRemoved, (s) => s.jobs.failedSweep.totalRemoved],
    legend: ['age sweep', 'failed sweep'],
  },
];
const samples = [];

function html(tag, attrs = {}, text = '') {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function setupCharts() {
  for (const chart of charts) {
    const card = html('div', { class: 'card chart', id: `chart-${chart.id}` });
    card.append(html('h2', {}, chart.title), html('span', { class: 'value', id: `value-${chart.id}` }, '–'));
    if (chart.legend) {
      const legend = html('div', { class: 'legend' });
      chart.legend.forEach((name, i) => {
        legend.append(html('span', { class: 'swatch', style: `background: var(${i === 0 ? '--accent' : '--warn'})` }), name);
      });
      card.append(legend);
    }
    const plot = svg('svg', { viewBox: '0 0 300 100', preserveAspectRatio: 'none', role: 'img', 'aria-label': chart.title });
    plot.append(svg('line', { class: 'axis', x1: 0, y1: 99, x2: 300, y2: 99 }));
    chart.series.forEach((_, i) => plot.append(svg('polyline', { class: i === 0 ? 'line' : 'line2', id: `line-${chart.id}-${i}`, points: '' })));
    card.append(plot, html('div', { class: 'scale', id: `scale-${chart.id}` }, ''));
    $('charts').append(card);
  }
}

function draw() {
  for (const chart of charts) {
    const values = chart.series.map((pick) => samples.map(pick));
    const max = Math.max(1, ...values.flat());
    values.forEach((series, i) => {
      const step = series.length > 1 ? 300 / (series.length - 1) : 0;
      const points = series.map((v, x) => `${(x * step).toFixed(1)},${(98 - (v / max) * 90).toFixed(1)}`);
      $(`line-${chart.id}-${i}`).setAttribute('points', points.join(' '));
    });
    const latest = values.map((series) => series[series.length - 1].toFixed(chart.digits || 0));
    $(`value-${chart.id}`).textContent = latest.join(' / ');
    const seconds = Math.round(((samples.length - 1) * interval) / 1000);
    $(`scale-${chart.id}`).textContent = `top of chart: ${max.toFixed(chart.digits || 0)} · last ${seconds} s`;
  }
}

function time(value) {
  return value ? new Date(value).toLocaleTimeString() : '–';
}

function tables(stats) {
  $('db-path').textContent = `${stats.storage.path} · ${(stats.storage.fileSizeBytes / 1024).toFixed(0)} KiB`;
  $('buckets').replaceChildren(...Object.entries(stats.storage.buckets).sort().map(([name, b]) => {
    const tr = document.createElement('tr');
    tr.append(cell(name), cell(b.keys));
    return tr;
  }));
  $('jobs').replaceChildren(...Object.entries(stats.jobs).map(([name, job]) => {
    const tr = document.createElement('tr');
    tr.append(cell(name), cell(job.schedule), cell(job.runs), cell(time(job.lastRun)), cell(job.lastRemoved), cell(time(job.nextRun)));
    return tr;
  }));
  for (const [id, level] of [['memory-pressure', stats.analysis.memoryPressure], ['hydration-pressure', stats.analysis.hydrationPressure]]) {
    $(id).textContent = level;
    $(id).dataset.level = level;
  }
  $('recommendations').replaceChildren(...stats.analysis.recommendations.map((text) => {
    const li = document.createElement('li');
    li.textContent = text;
    return li;
  }));
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

async function poll() {
  const banner = $('banner');
  try {
    const response = await fetch('/api/memory/stats', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const stats = await response.json();
    samples.push(stats);
    if (samples.length > MAX_POINTS) samples.shift();
    draw();
    tables(stats);
    banner.dataset.status = 'open';
    $('main').classList.remove('stale');
    banner.textContent = `Updated ${new Date(stats.timestamp).toLocaleTimeString()} · ${samples.length} samples every ${interval} ms`;
    document.body.dataset.samples = String(samples.length);
  } catch (err) {
    banner.dataset.status = 'reconnecting';
    banner.textContent = `Cannot read /api/memory/stats (${err.message}); retrying… The charts show the last values read.`;
    $('main').classList.add('stale');
  }
  setTimeout(poll, interval);
}

setupCharts();
poll();
