// Closing the loop (闭环): labels shared by the work-order, alert and history views, and the
// history detail's "闭环" section — the call's work order with its status trail, the SMS sent to
// the caller, the follow-ups (回访), and for supervisors a form to record one.

import {api, callPath} from './api.js';
import {dateTime, el, replaceChildren} from './dom.js';
import {targetText} from './views.js';

export const ORDER_STATUS_LABELS = {
  local: '待人工转交', queued: '待送达', accepted: '已受理', dispatched: '已派遣',
  completed: '已办结', returned: '已退回', failed: '送达失败',
};
export const ORDER_STATUSES = Object.keys(ORDER_STATUS_LABELS);
export const RETRYABLE = new Set(['failed', 'local', 'returned']);
export const SMS_PURPOSE_LABELS = {guidance: '办理指引', followup: '结果回访'};
export const SMS_STATUS_LABELS = {queued: '待发送', sent: '已发送', local: '未发送（无网关）', skipped: '未发送', failed: '发送失败'};
export const SIDE_LABELS = {110: '110 接警', hotline: '热线办理'};
export const SCORE_LABELS = {1: '满意', 2: '基本满意', 3: '不满意'};
export const SOURCE_LABELS = {sms: '短信回复', supervisor: '班长回访', fenliu: '系统', delivery: '送达', requeue: '重发', resend: '更正重发'};
const DELIVERY_LABELS = {pending: '发送中', delivered: '已送达', failed: '已放弃'};

export const orderStatusLabel = (s) => ORDER_STATUS_LABELS[s] || String(s || '—');
export const deliveryLabel = (s) => DELIVERY_LABELS[s] || String(s || '');
export const sourceLabel = (s) => {
  const text = String(s || '');
  return SOURCE_LABELS[text] || (text.startsWith('platform:') ? `平台 ${text.slice(9)}` : text);
};

/** An order's status as a coloured badge (.status-badge[data-status]). */
export function statusBadge(status) {
  const s = String(status || '');
  return el('span', {class: 'status-badge', dataset: {status: s}}, orderStatusLabel(s));
}

/** What a trail entry's detail says, as short text ("note=… why=…"). */
export function detailText(detail) {
  if (!detail || typeof detail !== 'object') return detail ? String(detail) : '';
  return Object.entries(detail)
    .filter(([, v]) => v !== null && v !== undefined && v !== '' && typeof v !== 'object')
    .map(([k, v]) => `${k}=${v}`).join(' ').slice(0, 300);
}

/** An order's status trail: one line per report (time, status, who reported it, detail). */
export function trailList(trail, attrs = {}) {
  const rows = Array.isArray(trail) ? trail : [];
  if (!rows.length) return el('p', {class: 'muted'}, '没有流转记录');
  // a late or out-of-order report is kept in the trail but changed nothing: shown as such
  const ignored = (t) => Boolean(t.detail && typeof t.detail === 'object' && t.detail.ignored);
  return el('ol', {class: 'trail', ...attrs}, rows.map((t) => el('li', {
    dataset: {status: String(t.status || ''), ignored: ignored(t) ? '1' : ''},
    class: ignored(t) ? 'ignored' : ''},
  el('span', {class: 'time'}, dateTime(t.at)),
  statusBadge(t.status),
  el('span', {class: 'muted'}, sourceLabel(t.source)),
  ignored(t) ? el('span', {class: 'muted small'}, '（迟到或乱序，状态未变）') : null,
  detailText(t.detail) ? el('span', {class: 'detail'}, detailText(t.detail)) : null)));
}

/**
 * The "闭环" section of a call (GET /api/calls/{id}/loop), loading in place.
 * opts: {supervisor: bool, onError(err)}.
 */
export function loopSection(callId, opts) {
  const body = el('div', {class: 'loop-body'}, el('p', {class: 'muted'}, '加载中…'));
  const section = el('section', {id: 'loop', class: 'loop', dataset: {callId: String(callId)}, 'aria-label': '闭环'},
    el('h4', {}, '闭环'), body);
  loadLoop(callId, body, opts);
  return section;
}

async function loadLoop(callId, body, opts) {
  let data;
  try {
    data = await api('GET', callPath(callId, '/loop'));
  } catch (err) {
    if (err.status !== 401) replaceChildren(body, el('p', {class: 'error-text'}, err.message));
    return;
  }
  const order = data.order || null;
  const sms = Array.isArray(data.sms) ? data.sms : [];
  const followups = Array.isArray(data.followups) ? data.followups : [];
  const trail = el('div', {class: 'loop-trail'});
  replaceChildren(body,
    el('h5', {}, '工单'),
    order ? orderSummary(order, trail) : el('p', {class: 'muted loop-no-order'}, '没有工单（未分流到热线）'),
    el('h5', {}, '短信'),
    sms.length ? el('ul', {class: 'loop-sms'}, sms.map(smsItem)) : el('p', {class: 'muted'}, '没有短信'),
    el('h5', {}, '回访'),
    followups.length ? el('ul', {class: 'loop-followups'}, followups.map(followupItem))
      : el('p', {class: 'muted loop-no-followups'}, '暂无回访'),
    opts.supervisor ? followupForm(callId, body, opts) : null);
  // the trail comes with the call's loop (operators too); supervisors also get each report's detail
  if (order) replaceChildren(trail, trailList(order.trail));
  if (order && opts.supervisor) {
    try {
      const full = await api('GET', `/api/orders/${encodeURIComponent(order.order_no)}`);
      replaceChildren(trail, trailList(full.trail));
    } catch (err) {
      if (err.status !== 401) replaceChildren(trail, el('p', {class: 'error-text'}, err.message));
    }
  }
}

function orderSummary(o, trail) {
  return el('div', {class: 'loop-order', dataset: {orderNo: String(o.order_no || '')}},
    el('p', {},
      el('strong', {class: 'order-no'}, String(o.order_no || '')), ' ', statusBadge(o.status), ' ',
      el('span', {}, targetText(o.target)), o.dept ? el('span', {class: 'muted'}, ` · ${o.dept}`) : null,
      o.category ? el('span', {class: 'muted'}, ` · ${o.category}`) : null),
    el('p', {class: 'muted small'}, `创建 ${dateTime(o.created_at)}`,
      o.deadline ? `　期限 ${dateTime(o.deadline)}` : '',
      o.platform_ref ? `　平台编号 ${o.platform_ref}` : '',
      o.last_error ? `　最近错误：${o.last_error}` : ''),
    trail);
}

function smsItem(m) {
  return el('li', {class: 'sms', dataset: {status: String(m.status || ''), purpose: String(m.purpose || '')}},
    el('p', {},
      el('span', {class: 'time'}, dateTime(m.sent_at || m.created_at)), ' ',
      el('strong', {}, SMS_PURPOSE_LABELS[m.purpose] || String(m.purpose || '')), ' ',
      el('span', {}, String(m.number || '')), ' ',
      el('span', {class: 'sms-status'}, SMS_STATUS_LABELS[m.status] || String(m.status || '')),
      m.reason ? el('span', {class: 'sms-reason muted'}, `（${m.reason}）`) : null),
    el('p', {class: 'sms-body'}, String(m.body || '')));
}

function followupItem(f) {
  return el('li', {class: 'followup', dataset: {side: String(f.side || ''), score: String(f.score || '')}},
    el('span', {class: 'time'}, dateTime(f.at)), ' ',
    el('strong', {}, SIDE_LABELS[f.side] || String(f.side || '')), ' ',
    el('span', {class: `score score-${f.score}`}, SCORE_LABELS[f.score] || String(f.score || '')), ' ',
    el('span', {class: 'muted'}, [sourceLabel(f.source), f.by_user].filter(Boolean).join(' · ')),
    f.note ? el('span', {class: 'note'}, ` ${f.note}`) : null);
}

/** Record a follow-up (supervisors): POST /api/calls/{id}/followups, then show the section again. */
function followupForm(callId, body, opts) {
  const error = el('p', {class: 'error-text', role: 'alert'});
  const submit = el('button', {type: 'submit', class: 'btn primary small'}, '记录回访');
  const form = el('form', {id: 'followup-form', class: 'followup-form', 'aria-label': '记录回访'},
    el('label', {}, '对象 ', el('select', {name: 'side'},
      Object.entries(SIDE_LABELS).map(([v, t]) => el('option', {value: v}, t)))),
    el('label', {}, '评价 ', el('select', {name: 'score'},
      Object.entries(SCORE_LABELS).map(([v, t]) => el('option', {value: v}, `${v} ${t}`)))),
    el('label', {class: 'grow'}, '备注 ', el('input', {name: 'note', type: 'text', maxlength: '500'})),
    submit, error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    submit.disabled = true;
    error.textContent = '';
    try {
      await api('POST', callPath(callId, '/followups'),
        {side: String(f.get('side')), score: Number(f.get('score')), note: String(f.get('note') || '').trim()});
      replaceChildren(body, el('p', {class: 'muted'}, '加载中…'));
      await loadLoop(callId, body, opts);
    } catch (err) {
      if (err.status !== 401) error.textContent = err.message;
      submit.disabled = false;
    }
  });
  return form;
}
