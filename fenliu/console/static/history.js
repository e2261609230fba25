// The history page: search past (and live) calls, and read one call's transcript, decision
// trail, transfer outcome and what followed (闭环: work order, SMS, follow-ups).

import {$, clear, clock, dateTime, el, replaceChildren, timeOfDay} from './dom.js';
import {api, callPath, query} from './api.js';
import {MODE_LABELS, conf, dangerLabel} from './config.js';
import {loopSection} from './loop.js';
import {
  TRANSFER_LABELS, chip, failureText, isCancelled, matchesOf, needlesOf, percent, targetText, utteranceEl, vetoesOf,
} from './views.js';

const PAGE = 50;
let offset = 0;
let showError = () => {};
let isSupervisor = () => false;

/** Wire the search form. onError(error) shows an API error; supervisor() says whether the
 * user may record follow-ups. */
export function initHistory(onError, supervisor = () => false) {
  showError = onError;
  isSupervisor = supervisor;
  const form = $('#history-search');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    search(0);
  });
  form.addEventListener('reset', () => setTimeout(() => search(0), 0));
  $('#history-prev').addEventListener('click', () => search(Math.max(0, offset - PAGE)));
  $('#history-next').addEventListener('click', () => search(offset + PAGE));
}

/** Fill the target suggestions from the configuration. */
export function historyTargets() {
  const list = $('#history-targets');
  replaceChildren(list, conf.targets.map((t) => el('option', {value: t.id}, targetText(t.id))));
}

/** Run the search in the form, from result `from`. */
export async function search(from = 0) {
  const form = $('#history-search');
  const f = new FormData(form);
  const params = {};
  for (const name of ['q', 'number', 'from', 'to', 'category', 'target']) params[name] = f.get(name) || '';
  params.limit = PAGE;
  params.offset = from;
  const status = $('#history-total');
  status.textContent = '查询中…';
  let data;
  try {
    data = await api('GET', `/api/history${query(params)}`);
  } catch (err) {
    status.textContent = '';
    showError(err);
    return;
  }
  offset = from;
  const rows = Array.isArray(data.calls) ? data.calls : [];
  const total = Number(data.total) || 0;
  renderRows(rows);
  status.textContent = total ? `共 ${total} 条，第 ${from + 1}–${from + rows.length} 条` : '没有符合条件的通话';
  $('#history-prev').disabled = from <= 0;
  $('#history-next').disabled = from + rows.length >= total;
}

function renderRows(rows) {
  const body = $('#history-results tbody');
  clear(body);
  for (const r of rows) {
    const duration = r.ended_at && r.started_at ? clock(r.ended_at - r.started_at) : '进行中';
    const tr = el('tr', {
      tabindex: '0', dataset: {callId: String(r.call_id || '')},
      onclick: () => openRow(tr, r.call_id),
      onkeydown: (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          openRow(tr, r.call_id);
        }
      },
    },
    el('td', {class: 'nowrap'}, dateTime(r.started_at)),
    el('td', {class: 'nowrap'}, String(r.remote || '')),
    el('td', {class: 'nowrap'}, duration),
    el('td', {}, String(r.category || '')),
    el('td', {class: 'nowrap'}, r.target ? targetText(r.target) : ''),
    el('td', {class: 'nowrap'}, r.transfer ? (TRANSFER_LABELS[r.transfer] || String(r.transfer)) : '—'),
    el('td', {class: 'snippet', title: String(r.text || '')}, String(r.text || '')));
    body.append(tr);
  }
}

function openRow(tr, callId) {
  for (const other of tr.parentNode.children) other.classList.toggle('selected', other === tr);
  showDetail(callId);
}

/** Show one call: transcript, decisions, transfers (GET /api/calls/{id}). */
export async function showDetail(callId) {
  const box = $('#history-detail');
  replaceChildren(box, el('p', {class: 'muted'}, '加载中…'));
  let data;
  try {
    data = await api('GET', callPath(callId));
  } catch (err) {
    replaceChildren(box, el('p', {class: 'error-text'}, err.message));
    return;
  }
  const call = data.call || {};
  const decisions = Array.isArray(data.decisions) ? data.decisions : [];
  const callerDecisions = decisions.filter((d) => d && (!d.leg || d.leg === 'caller'));
  const last = callerDecisions[callerDecisions.length - 1] || call.decision || null;
  const needles = needlesOf(last);
  const utterances = Array.isArray(data.utterances) ? data.utterances : [];
  const transfers = Array.isArray(data.transfers) ? data.transfers : [];
  replaceChildren(box,
    el('h3', {}, `通话 ${call.remote || ''}`),
    el('p', {class: 'muted'},
      `开始 ${dateTime(call.started_at || call.since)}`,
      call.ended_at ? `　结束 ${dateTime(call.ended_at)}` : (data.live ? '　进行中' : ''),
      call.reason ? `　${call.reason}` : '',
      call.instance ? `　实例 ${call.instance}` : ''), // which fenliu instance handled it (several share a store)
    el('h4', {}, '通话记录'),
    utterances.length
      ? el('div', {class: 'transcript static'}, utterances.map((u) => utteranceEl(u, needles)))
      : el('p', {class: 'muted'}, '没有识别文本'),
    el('h4', {}, '决策记录'),
    decisions.length ? el('ol', {class: 'decisions'}, decisions.map(decisionItem)) : el('p', {class: 'muted'}, '没有决策'),
    el('h4', {}, '转接结果'),
    transfers.length ? el('ol', {class: 'transfers'}, transfers.map(transferItem))
      : el('p', {class: 'muted'}, call.transfer ? (TRANSFER_LABELS[call.transfer] || String(call.transfer)) : '未转接'),
    loopSection(callId, {supervisor: isSupervisor()}));
}

function decisionItem(d) {
  const vetoes = vetoesOf(d);
  return el('li', {class: vetoes.length ? 'danger' : ''},
    el('span', {class: 'time'}, timeOfDay(d.at)),
    el('span', {class: 'target'}, d.target === 'police' ? '留 110' : targetText(d.target)),
    el('span', {}, String(d.category || '')),
    el('span', {class: 'conf'}, percent(d.confidence)),
    el('span', {class: 'words'}, matchesOf(d).map((m) => chip(m)), vetoes.map((m) => chip(m, true))),
    vetoes.length ? el('span', {class: 'groups'}, [...new Set(vetoes.map((m) => dangerLabel(m.group)))].join('、')) : null,
    d.reason ? el('div', {class: 'reason'}, String(d.reason)) : null);
}

function transferItem(t) {
  const step = String(t.step || t.kind || '').replace(/^transfer_/, '');
  const status = t.sip_status || t.status;
  const cancelled = step === 'failed' && isCancelled(t);
  return el('li', {class: cancelled ? 'cancelled' : step === 'failed' ? 'failed' : ''},
    el('span', {class: 'time'}, timeOfDay(t.at)),
    el('span', {}, cancelled ? '已取消' : TRANSFER_LABELS[step] || step),
    el('span', {}, targetText(t.target_id || t.target || '')),
    t.mode ? el('span', {class: 'muted'}, MODE_LABELS[t.mode] || String(t.mode)) : null,
    cancelled ? el('span', {class: 'muted'}, '接警员取消') : step === 'failed' ? el('span', {}, failureText(t))
      : t.reason ? el('span', {}, `${t.reason}${status ? ` (${status})` : ''}`) : null);
}
