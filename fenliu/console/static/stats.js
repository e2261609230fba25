// 统计 (supervisors): the figures of 非警务警情分流 for a range of days (GET /api/stats; keys in
// fenliu/loop/stats.py), as tiles, a daily trend chart, bars per category and per hotline,
// the operators' final actions and override pairs; CSV / Excel export (GET /api/stats/export).

import {api, query} from './api.js';
import {$, el, replaceChildren} from './dom.js';
import {bars, lineChart} from './chart.js';
import {targetText} from './views.js';

/** Rates are fractions (0.75 → "75.0%"); null (no denominator) is "—". */
export const rate = (x) => (typeof x === 'number' && isFinite(x) ? `${(x * 100).toFixed(1)}%` : '—');
const count = (x) => (typeof x === 'number' && isFinite(x) ? String(x) : '—');
const number = (x) => (typeof x === 'number' && isFinite(x) ? String(Math.round(x * 100) / 100) : '—');

// [key, 中文, how it reads, what it is a fraction of]
const TILES = [
  ['calls', '接警总量', count],
  ['non_police', '非警务警情', count],
  ['diverted', '已分流', count],
  ['diversion_rate', '分流率', rate, ['diverted', 'non_police']],
  ['per_day_diverted', '日均分流', number],
  ['dispatch_rate', '派出率', rate, ['dispatched', 'orders']],
  ['completion_rate', '有效办结率', rate, ['completed', 'orders']],
  ['flowback_rate', '回流率', rate, ['flowback', 'diverted']],
  ['sat_110', '110满意率', rate, '110'],
  ['sat_hotline', '热线满意率', rate, 'hotline'],
];
export const ACTION_LABELS = {
  accepted: '采纳建议分流', overrode: '改派其他热线', kept: '建议分流但留110', unsuggested: '无建议自行分流',
  police: '110 处置', none: '未结束 / 无处置',
};

const T = {ctx: null, loaded: false, seq: 0};

/** ctx: {showError(err)}. */
export function initStats(ctx) {
  T.ctx = ctx;
  $('#stats-range').addEventListener('submit', (e) => {
    e.preventDefault();
    loadStats();
  });
}

/** Load once when the tab is first shown (the 查询 button loads again). */
export function showStats() {
  if (!T.loaded) loadStats();
}

export function resetStats() {
  T.loaded = false;
  T.seq++;
  const form = $('#stats-range');
  form.elements.from.value = '';
  form.elements.to.value = '';
}

/**
 * GET /api/stats for the range in the form. With the form still empty, the server's default
 * (the last 30 days in the store's time zone, which is what a "day" of the figures means) is
 * asked for and written back into the form.
 */
export async function loadStats() {
  const form = $('#stats-range');
  const params = {from: form.elements.from.value, to: form.elements.to.value};
  const seq = ++T.seq;
  const status = $('#stats-status');
  status.textContent = '统计中…';
  let figs;
  try {
    figs = await api('GET', `/api/stats${query(params)}`);
  } catch (err) {
    if (seq !== T.seq) return;
    status.textContent = '';
    if (err.status !== 401) T.ctx.showError(err);
    return;
  }
  if (seq !== T.seq) return;
  T.loaded = true;
  form.elements.from.value = String(figs.from || params.from || '');
  form.elements.to.value = String(figs.to || params.to || '');
  status.textContent = `${figs.from} — ${figs.to}，共 ${figs.days} 天`;
  exportLinks(figs.from, figs.to);
  render(figs);
}

function exportLinks(from, to) {
  $('#export-csv').href = `/api/stats/export${query({from, to, format: 'csv'})}`;
  $('#export-xlsx').href = `/api/stats/export${query({from, to, format: 'xlsx'})}`;
}

function render(figs) {
  const t = figs.totals || {};
  const sat = t.satisfaction || figs.satisfaction || {};
  replaceChildren($('#stats-tiles'), TILES.map(([key, label, fmt, of]) => {
    let value = t[key];
    let sub = '';
    if (typeof of === 'string') { // a satisfaction side
      const s = sat[of] || {};
      value = s.rate;
      sub = s.count ? `满意 ${s.satisfied} / 回访 ${s.count}` : '暂无回访';
    } else if (Array.isArray(of)) {
      sub = `${count(t[of[0]])} / ${count(t[of[1]])}`;
    }
    return el('div', {class: 'tile', dataset: {key}},
      el('span', {class: 'tile-label'}, label),
      el('span', {class: 'tile-value'}, fmt(value)),
      sub ? el('span', {class: 'tile-sub muted'}, sub) : null);
  }));

  const days = Array.isArray(figs.by_day) ? figs.by_day : [];
  replaceChildren($('#stats-chart'), days.length
    ? lineChart(days.map((d) => String(d.day)), [
      {name: '接警', cls: 'calls', values: days.map((d) => d.calls)},
      {name: '非警务', cls: 'non-police', values: days.map((d) => d.non_police)},
      {name: '已分流', cls: 'diverted', values: days.map((d) => d.diverted)},
    ], {label: '每日接警与分流', width: 1000, height: 240})
    : el('p', {class: 'muted'}, '无数据'));

  const cats = Array.isArray(figs.by_category) ? figs.by_category : [];
  replaceChildren($('#stats-by-category'), bars(cats.map((r) => ({
    label: String(r.category || r.category_id || '未分类'), value: r.calls,
    note: r.diverted ? `分流 ${r.diverted}（${rate(r.diversion_rate)}）` : '',
  }))));
  const targets = Array.isArray(figs.by_target) ? figs.by_target : [];
  replaceChildren($('#stats-by-target'), bars(targets.map((r) => ({
    label: r.target === 'police' ? '110 处置' : (targetText(r.target) || String(r.target_name || r.target)),
    value: r.calls, note: r.orders ? `工单 ${r.orders} · 办结 ${rate(r.completion_rate)}` : '',
  }))));

  const actions = figs.actions || t.actions || {};
  const total = Object.values(actions).reduce((a, b) => a + (Number(b) || 0), 0);
  replaceChildren($('#stats-actions tbody'), Object.keys(ACTION_LABELS).map((a) => el('tr', {dataset: {action: a}},
    el('td', {}, ACTION_LABELS[a]),
    el('td', {class: 'num'}, count(Number(actions[a]) || 0)),
    el('td', {class: 'num'}, total ? rate((Number(actions[a]) || 0) / total) : '—'))));
  const overrides = Array.isArray(figs.overrides) ? figs.overrides : [];
  replaceChildren($('#stats-overrides tbody'), overrides.length
    ? overrides.map((o) => el('tr', {},
      el('td', {}, targetText(o.suggested) || '—'), el('td', {}, targetText(o.diverted_to) || '—'),
      el('td', {class: 'num'}, count(o.count))))
    : el('tr', {}, el('td', {colspan: '3', class: 'muted'}, '没有改派')));
}
