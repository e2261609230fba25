// 告警 (supervisors): open alerts — orders not delivered or refused, SMS failures, overdue or
// returned orders, unsatisfied callers — with "已处理" (POST /api/alerts/{id}/ack). New alerts
// arrive on the event stream (kind "alert") and appear without a reload; the tab shows how
// many are open (#alert-count).

import {api} from './api.js';
import {$, dateTime, el, replaceChildren} from './dom.js';

export const ALERT_KIND_LABELS = {
  order_stuck: '工单未送达', sms_stuck: '短信未送达', order_refused: '工单被拒收', sms_failed: '短信发送失败',
  order_overdue: '工单超期未办结', order_returned: '工单被退回', unsatisfied: '群众不满意',
};

const A = {
  items: new Map(), // id -> alert row
  recent: [], // alerts from the stream while a GET is in flight (merged into its answer)
  loading: 0, // generation of the latest GET
  inFlight: false,
  ctx: null,
};

/** ctx: {showError(err), showMessage(text, kind), openOrder(orderNo)}. */
export function initAlerts(ctx) {
  A.ctx = ctx;
  $('#alerts-all').addEventListener('change', () => loadAlerts());
  $('#alerts-refresh').addEventListener('click', () => loadAlerts());
}

/** GET /api/alerts (open ones, or all with the checkbox). */
export async function loadAlerts() {
  const all = $('#alerts-all').checked;
  const generation = ++A.loading;
  A.recent = [];
  A.inFlight = true;
  let data;
  try {
    data = await api('GET', `/api/alerts${all ? '?all=1' : ''}`);
  } catch (err) {
    if (generation === A.loading) A.inFlight = false;
    if (err.status !== 401 && A.ctx) A.ctx.showError(err);
    return;
  }
  if (generation !== A.loading) return; // a newer load answers instead
  A.inFlight = false;
  A.items = new Map((Array.isArray(data.alerts) ? data.alerts : []).map((a) => [Number(a.id), a]));
  for (const a of A.recent) if (!A.items.has(Number(a.id))) A.items.set(Number(a.id), a);
  A.recent = [];
  render();
}

/** An "alert" event of the stream (its data is the alert row). */
export function alertEvent(data) {
  const id = Number(data && data.id);
  if (!id) return;
  if (A.inFlight) A.recent.push(data);
  if (!A.items.has(id)) A.items.set(id, data);
  render();
}

/** An "alert_acked" event: another supervisor handled it (data: {id, by}). */
export function alertAckedEvent(data) {
  const a = A.items.get(Number(data && data.id));
  if (!a) return;
  a.acked_by = String(data.by || '');
  a.acked_at = a.acked_at || Date.now() / 1000;
  if (!$('#alerts-all').checked) A.items.delete(Number(a.id));
  render();
}

/** Forget everything (logout). */
export function resetAlerts() {
  A.items.clear();
  A.recent = [];
  A.loading++;
  A.inFlight = false;
  render();
}

const isOpen = (a) => !a.acked_at;

function render() {
  const open = [...A.items.values()].filter(isOpen).length;
  const badge = $('#alert-count');
  badge.textContent = String(open);
  badge.hidden = open === 0;
  $('#tab-alerts').setAttribute('aria-label', open ? `告警（${open} 条未处理）` : '告警');
  const rows = [...A.items.values()].sort((a, b) => Number(b.id) - Number(a.id));
  $('#alerts-empty').hidden = rows.length > 0;
  replaceChildren($('#alerts-list'), rows.map(alertItem));
}

function alertItem(a) {
  const open = isOpen(a);
  const kind = String(a.kind || '');
  return el('li', {class: `alert-item${open ? '' : ' acked'}`, dataset: {alertId: String(a.id), kind}},
    el('div', {class: 'alert-head'},
      el('span', {class: 'time'}, dateTime(a.at)),
      el('strong', {class: 'alert-kind'}, ALERT_KIND_LABELS[kind] || kind),
      a.order_no ? el('button', {
        type: 'button', class: 'btn small link', title: '查看工单',
        onclick: () => A.ctx && A.ctx.openOrder(String(a.order_no)),
      }, `工单 ${a.order_no}`) : null,
      el('span', {class: 'spacer'}),
      open ? el('button', {type: 'button', class: 'btn small primary ack-btn', onclick: (e) => ack(a, e.currentTarget)},
        '已处理')
        : el('span', {class: 'muted small'}, `已处理 ${a.acked_by || ''} ${dateTime(a.acked_at)}`)),
    el('p', {class: 'alert-message'}, String(a.message || '')));
}

async function ack(a, button) {
  button.disabled = true;
  try {
    const data = await api('POST', `/api/alerts/${encodeURIComponent(a.id)}/ack`, {});
    a.acked_by = data.acked_by || '';
    a.acked_at = Date.now() / 1000;
  } catch (err) {
    if (err.status === 404) {
      a.acked_at = a.acked_at || Date.now() / 1000; // someone else handled it meanwhile
    } else {
      button.disabled = false;
      if (err.status !== 401 && A.ctx) A.ctx.showError(err);
      return;
    }
  }
  if (!$('#alerts-all').checked) A.items.delete(Number(a.id));
  render();
}
