// Small charts built with DOM APIs only (no library, no markup strings): a line chart as inline
// SVG (createElementNS) and horizontal bars as elements whose width is set through the CSSOM
// (allowed by the console's `style-src 'self'`; a style attribute would not be).

import {el} from './dom.js';

const NS = 'http://www.w3.org/2000/svg';

/** An SVG element: svg('path', {d: 'M0 0', class: 'line'}, child…). Strings become text nodes. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A "nice" upper bound for an axis (1, 2, 5 × 10^n) at or above `max`. */
function niceMax(max) {
  if (!(max > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * step >= max) return m * step;
  return 10 * step;
}

/**
 * A line chart of daily series.
 *   lineChart(['2025-11-01', …], [{name: '接警', cls: 'calls', values: [3, 5, …]}, …])
 * One <path class="line series-<cls>"> and one <circle class="point series-<cls>"> per value
 * (with a <title> for the tooltip); x labels are thinned to fit, y has four grid lines.
 */
export function lineChart(labels, series, {width = 640, height = 220, label = '趋势图'} = {}) {
  const pad = {left: 36, right: 10, top: 10, bottom: 26};
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const n = labels.length;
  const top = niceMax(Math.max(0, ...series.flatMap((s) => s.values.map((v) => Number(v) || 0))));
  const x = (i) => pad.left + (n <= 1 ? w / 2 : (i * w) / (n - 1));
  const y = (v) => pad.top + h - ((Number(v) || 0) / top) * h;
  const root = svg('svg', {
    class: 'line-chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label,
    preserveAspectRatio: 'xMidYMid meet',
  });
  root.append(svg('title', {}, label));
  // grid and y labels
  const grid = svg('g', {class: 'grid'});
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    const yy = y(v);
    grid.append(svg('line', {x1: pad.left, x2: pad.left + w, y1: yy, y2: yy}),
      svg('text', {x: pad.left - 4, y: yy + 4, class: 'y-label', 'text-anchor': 'end'},
        Number.isInteger(v) ? String(v) : v.toFixed(1)));
  }
  root.append(grid);
  // x labels: at most ~8, always the first and the last
  const every = Math.max(1, Math.ceil(n / 8));
  const xs = svg('g', {class: 'x-labels'});
  labels.forEach((text, i) => {
    if (i % every !== 0 && i !== n - 1) return;
    if (i !== n - 1 && n - 1 - i < every / 2) return; // would crowd the last label
    xs.append(svg('text', {x: x(i), y: height - 8, 'text-anchor': 'middle'}, String(text).slice(5)));
  });
  root.append(xs);
  // the series
  for (const s of series) {
    const values = labels.map((_, i) => Number(s.values[i]) || 0);
    const d = values.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)} ${y(v).toFixed(1)}`).join(' ');
    const g = svg('g', {class: `series series-${s.cls}`, 'data-series': s.cls});
    if (n) g.append(svg('path', {class: 'line', d}));
    values.forEach((v, i) => g.append(svg('circle', {class: 'point', cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3},
      svg('title', {}, `${labels[i]} ${s.name}：${v}`))));
    root.append(g);
  }
  return el('figure', {class: 'chart-figure'}, root,
    el('figcaption', {class: 'legend'}, series.map((s) => el('span', {class: `key series-${s.cls}`}, s.name))));
}

/**
 * Horizontal bars: rows [{label, value, note?}] → one .bar-row each, the longest bar full width.
 * `format(value)` makes the number shown at the end of the bar.
 */
export function bars(rows, {format = String, empty = '无数据'} = {}) {
  if (!rows.length) return el('p', {class: 'muted'}, empty);
  const max = Math.max(...rows.map((r) => Number(r.value) || 0), 0) || 1;
  return el('div', {class: 'bars'}, rows.map((r) => {
    const fill = el('span', {class: 'bar-fill'});
    fill.style.width = `${Math.max(0, Math.min(100, ((Number(r.value) || 0) / max) * 100)).toFixed(1)}%`;
    return el('div', {class: 'bar-row', dataset: {label: String(r.label)}},
      el('span', {class: 'bar-label', title: String(r.label)}, String(r.label)),
      el('span', {class: 'bar-track'}, fill),
      el('span', {class: 'bar-value'}, format(r.value), r.note ? el('span', {class: 'bar-note'}, ` ${r.note}`) : null));
  }));
}
