// 线索 (supervisors): 串并分析 — non-police calls from several numbers that name the same
// merchant or place, or say nearly the same words (GET /api/leads; keys in stats.leads()).

import {api, query} from './api.js';
import {$, dateTime, el, replaceChildren} from './dom.js';
import {targetText} from './views.js';

const REASONS = {entity: '同一商户/地点', similar_text: '相似诉求'};
const L = {ctx: null};

/** ctx: {showError(err), openCall(callId)}. */
export function initLeads(ctx) {
  L.ctx = ctx;
  $('#leads-form').addEventListener('submit', (e) => {
    e.preventDefault();
    loadLeads();
  });
}

export async function loadLeads() {
  const days = $('#leads-form').elements.days.value;
  const status = $('#leads-status');
  status.textContent = '分析中…';
  let data;
  try {
    data = await api('GET', `/api/leads${query({days})}`);
  } catch (err) {
    status.textContent = '';
    if (err.status !== 401) L.ctx.showError(err);
    return;
  }
  const leads = Array.isArray(data.leads) ? data.leads : [];
  status.textContent = `近 ${data.days} 天，至少 ${data.min_numbers} 个号码：${leads.length ? `${leads.length} 条线索` : '没有线索'}`;
  replaceChildren($('#leads-list'), leads.map(leadItem));
}

function leadItem(ld) {
  const calls = Array.isArray(ld.calls) ? ld.calls : [];
  const reason = REASONS[ld.reason] || String(ld.reason_label || ld.reason || '').split(' / ')[0];
  return el('li', {class: 'lead', dataset: {reason: String(ld.reason || '')}},
    el('div', {class: 'lead-head'},
      el('strong', {class: 'lead-key'}, String(ld.key || '')),
      el('span', {class: 'badge alt'}, reason),
      el('span', {class: 'lead-counts'}, `${ld.distinct_numbers} 个号码 · ${ld.count} 次来电`),
      el('span', {class: 'muted small'}, ld.first_day === ld.last_day ? String(ld.first_day || '')
        : `${ld.first_day} — ${ld.last_day}`)),
    Array.isArray(ld.categories) && ld.categories.length
      ? el('p', {class: 'small'}, `类别：${ld.categories.join('、')}`) : null,
    Array.isArray(ld.numbers) && ld.numbers.length
      ? el('p', {class: 'small muted'}, `号码：${ld.numbers.join('  ')}`) : null,
    el('table', {class: 'results compact lead-calls'},
      el('thead', {}, el('tr', {}, ['时间', '号码', '类别', '去向', '内容'].map((h) => el('th', {}, h)))),
      el('tbody', {}, calls.map((c) => el('tr', {
        tabindex: '0', dataset: {callId: String(c.call_id || '')}, title: '查看通话',
        onclick: () => L.ctx.openCall(String(c.call_id)),
        onkeydown: (e) => {
          if (e.key === 'Enter') L.ctx.openCall(String(c.call_id));
        },
      },
      el('td', {class: 'nowrap'}, dateTime(c.started_at)),
      el('td', {class: 'nowrap'}, String(c.number || '')),
      el('td', {}, String(c.category || '')),
      el('td', {class: 'nowrap'}, targetText(c.target)),
      el('td', {class: 'snippet', title: String(c.excerpt || '')}, String(c.excerpt || '')))))));
}
