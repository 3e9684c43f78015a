// Benchmark reports: the shared JSON format (see bench/schema.json), and how the page draws them
// (a table and inline SVG bar charts; no chart library, so the page works offline from static files).

export const FORMAT = 'mamba-edge-bench';
export const VERSION = 1;

/** Numeric result fields every report row may carry, with how the page shows them. */
export const METRICS = [
  { key: 'decodeTokPerSec', label: 'decode tok/s', better: 'higher' },
  { key: 'prefillTokPerSec', label: 'prefill tok/s', better: 'higher' },
  { key: 'timeToFirstTokenMs', label: 'time to first token (ms)', better: 'lower' },
];

/**
 * Checks a parsed JSON file against the report format and fills in what older or CLI-made files may lack.
 * Throws an Error naming the first problem. Unknown fields are kept (newer versions may add some).
 */
export function validateReport(data, name = 'file') {
  const fail = (why) => {
    throw new Error(`${name}: not a mamba-edge benchmark report (${why})`);
  };
  if (!data || typeof data !== 'object' || Array.isArray(data)) fail('expected a JSON object');
  if (data.format !== undefined && data.format !== FORMAT) fail(`format is ${JSON.stringify(data.format)}`);
  if (typeof data.version === 'number' && data.version > VERSION) fail(`version ${data.version} is newer than this page (${VERSION})`);
  if (!data.device || typeof data.device !== 'object') fail('missing "device" (the probe report)');
  if (!Array.isArray(data.results)) fail('missing "results" array');
  data.results.forEach((r, i) => {
    if (!r || typeof r !== 'object') fail(`results[${i}] is not an object`);
    if (typeof r.backend !== 'string') fail(`results[${i}].backend must be a string`);
    for (const { key } of METRICS) {
      if (r[key] !== undefined && r[key] !== null && typeof r[key] !== 'number') fail(`results[${i}].${key} must be a number or null`);
    }
  });
  return data;
}

/** A short human name for the device a report came from. */
export function deviceLabel(report) {
  const d = report.device ?? {};
  if (report.label) return report.label;
  // `npm run bench` (bench/run.js) describes the machine rather than embedding a probe report.
  if (d.cpu || d.node) return [d.node ? `Node ${d.node}` : null, d.cpu, d.cores ? `${d.cores} cores` : null].filter(Boolean).join(' · ');
  const a = d.webgpu?.adapter;
  const gpu = d.webgpu?.available ? `${a?.description || [a?.vendor, a?.architecture].filter(Boolean).join(' ') || 'GPU'}${a?.software ? ' (software)' : ''}` : 'no WebGPU';
  const runtime = d.runtime === 'browser' || d.runtime === 'browser-worker' ? browserName(d.version) : (d.version ?? d.runtime ?? '?');
  const cores = d.logicalCores ? `${d.logicalCores} cores` : '';
  return [runtime, cores, gpu].filter(Boolean).join(' · ');
}

function browserName(ua) {
  if (!ua) return 'browser';
  const m = /(Edg|Firefox|Chrome|Chromium|Version)\/(\d+)/.exec(ua);
  const os = /Android|iPhone|iPad|Mac OS X|Windows|Linux/.exec(ua)?.[0] ?? '';
  const name = m ? { Edg: 'Edge', Version: 'Safari' }[m[1]] ?? m[1] : 'browser';
  return `${name}${m ? ` ${m[2]}` : ''}${os ? ` (${os})` : ''}`;
}

export const COLORS = ['#2563eb', '#ea580c', '#16a34a', '#9333ea', '#dc2626', '#0891b2', '#ca8a04', '#db2777'];

const fmt = (v, digits = 1) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–');
const mb = (v) => (typeof v === 'number' && v > 0 ? (v / 2 ** 20).toFixed(2) : '–');
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

/** Table rows for all runs (this device first), one per backend result. */
export function renderTable(tbody, runs) {
  const rows = [];
  runs.forEach((run, i) => {
    for (const r of run.report.results) {
      const note = r.error ? `<td class="err">${esc(r.error)}</td>` : `<td class="l note">${esc(r.description ?? '')}${r.worker === true ? ' · Web Worker' : r.worker === false ? ' · page thread' : ''}</td>`;
      rows.push(`<tr data-run="${i}" data-backend="${esc(r.backend)}" data-ok="${r.error ? 0 : 1}">
        <td class="dev" title="${esc(run.label)}"><span class="swatch" style="background:${COLORS[i % COLORS.length]}"></span>${esc(run.label)}</td>
        <td class="l">${esc(r.backend)}</td><td class="dtype">${esc(r.dtype ?? '–')}</td><td class="threads">${esc(r.threads ?? '–')}</td>
        <td>${fmt(r.loadMs, 0)}</td><td class="ttft">${fmt(r.timeToFirstTokenMs, 1)}</td>
        <td class="prefill">${fmt(r.prefillTokPerSec, 1)}</td><td class="decode">${fmt(r.decodeTokPerSec, 1)}</td>
        <td>${mb(r.weightBytes)}</td><td title="${esc(r.memorySource ?? '')}">${mb(r.memoryBytes)}</td>${note}</tr>`);
    }
  });
  tbody.innerHTML = rows.length ? rows.join('') : '<tr><td colspan="11" class="empty l">no results yet</td></tr>';
}

/** One horizontal bar chart (inline SVG) per metric: a group per backend/dtype, a bar per run. */
export function renderCharts(container, runs) {
  container.innerHTML = '';
  const ok = runs.flatMap((run, i) => run.report.results.filter((r) => !r.error).map((r) => ({ r, i, label: run.label })));
  if (ok.length === 0) {
    container.innerHTML = '<p class="empty">run the benchmark or import a report to see charts</p>';
    return;
  }
  const groups = [...new Set(ok.map(({ r }) => `${r.backend} ${r.dtype ?? ''}`.trim()))];
  for (const metric of METRICS) {
    const bars = ok.filter(({ r }) => typeof r[metric.key] === 'number' && r[metric.key] > 0);
    if (bars.length === 0) continue;
    const max = Math.max(...bars.map(({ r }) => r[metric.key]));
    const barH = 14;
    const gap = 8;
    const labelW = 90;
    const width = 460;
    const plotW = width - labelW - 70;
    let y = 4;
    const parts = [];
    for (const g of groups) {
      const inGroup = bars.filter(({ r }) => `${r.backend} ${r.dtype ?? ''}`.trim() === g);
      if (inGroup.length === 0) continue;
      parts.push(`<text x="${labelW - 6}" y="${y + barH - 3}" text-anchor="end" font-size="12">${esc(g)}</text>`);
      for (const { r, i, label } of inGroup) {
        const v = r[metric.key];
        const w = Math.max(1, (v / max) * plotW);
        parts.push(
          `<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" rx="2" fill="${COLORS[i % COLORS.length]}"><title>${esc(label)}: ${fmt(v, 2)}</title></rect>`,
          `<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 3}" font-size="11" fill="#333">${fmt(v, v >= 100 ? 0 : 1)}</text>`,
        );
        y += barH + 2;
      }
      y += gap;
    }
    const fig = document.createElement('figure');
    fig.dataset.metric = metric.key;
    fig.innerHTML = `<figcaption>${esc(metric.label)} <small style="color:#5b6670;font-weight:400">(${metric.better} is better)</small></figcaption>
      <svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 ${width} ${y}" role="img" aria-label="${esc(metric.label)}">${parts.join('')}</svg>`;
    container.append(fig);
  }
}

export function renderLegend(el, runs) {
  el.innerHTML = runs
    .map((run, i) => `<span><span class="swatch" style="background:${COLORS[i % COLORS.length]}"></span>${esc(run.label)}${run.source === 'import' ? ` <small>(${esc(run.file)})</small>` : ''}</span>`)
    .join('');
}
