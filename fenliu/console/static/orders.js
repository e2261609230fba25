// 工单 (supervisors): the work orders opened by diversions, filterable by status and date
// (GET /api/orders), one order's detail with its status trail (GET /api/orders/{no}), and "重发"
// for an order that failed or was never sent (POST /api/orders/{no}/retry; 409 when it cannot).

import {api, query} from './api.js';
import {$, dateTime, el, replaceChildren} from './dom.js';
import {
  ORDER_STATUSES, RETRYABLE, deliveryLabel, orderStatusLabel, statusBadge, trailList,
} from './loop.js';
import {targetText} from './views.js';

const O = {ctx: null, open: ''};

/** ctx: {showError(err), showMessage(text, kind)}. */
export function initOrders(ctx) {
  O.ctx = ctx;
  const select = $('#orders-filter select[name=status]');
  replaceChildren(select, el('option', {value: ''}, '全部状态'),
    ORDER_STATUSES.map((s) => el('option', {value: s}, orderStatusLabel(s))));
  const form = $('#orders-filter');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    loadOrders();
  });
  select.addEventListener('change', () => loadOrders());
  form.addEventListener('reset', () => setTimeout(loadOrders, 0));
}

/** GET /api/orders with the filter. */
export async function loadOrders() {
  const f = new FormData($('#orders-filter'));
  const params = {status: f.get('status') || '', from: f.get('from') || '', to: f.get('to') || ''};
  const status = $('#orders-status');
  status.textContent = '查询中…';
  let data;
  try {
    data = await api('GET', `/api/orders${query(params)}`);
  } catch (err) {
    status.textContent = '';
    if (err.status !== 401) O.ctx.showError(err);
    return;
  }
  const rows = Array.isArray(data.orders) ? data.orders : [];
  status.textContent = rows.length ? `共 ${rows.length} 张工单` : '没有符合条件的工单';
  renderOutbox(data.outbox || {});
  const body = $('#orders-table tbody');
  replaceChildren(body, rows.map(orderRow));
  if (O.open) markSelected(O.open);
}

function renderOutbox(counts) {
  const labels = {order_pending: '工单待送', order_failed: '工单失败', sms_pending: '短信待发', sms_failed: '短信失败'};
  const parts = Object.entries(labels).filter(([k]) => Number(counts[k]) > 0).map(([k, t]) => `${t} ${counts[k]}`);
  $('#orders-outbox').textContent = parts.length ? `发件箱：${parts.join('　')}` : '发件箱：无待发送';
}

function orderRow(o) {
  const no = String(o.order_no || '');
  const tr = el('tr', {
    tabindex: '0', dataset: {orderNo: no, status: String(o.status || '')},
    onclick: () => openOrder(no),
    onkeydown: (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        openOrder(no);
      }
    },
  },
  el('td', {class: 'nowrap order-no'}, no),
  el('td', {class: 'nowrap'}, dateTime(o.created_at)),
  el('td', {class: 'nowrap'}, targetText(o.target)),
  el('td', {}, [o.category, o.dept].filter(Boolean).join(' · ')),
  el('td', {class: 'nowrap'}, String(o.number || '')),
  el('td', {class: 'nowrap'}, statusBadge(o.status)),
  el('td', {class: 'delivery'}, deliveryText(o)));
  return tr;
}

function deliveryText(o) {
  const parts = [];
  if (o.delivery) parts.push(deliveryLabel(o.delivery));
  if (Number(o.attempts)) parts.push(`${o.attempts} 次`);
  if (o.last_error) parts.push(String(o.last_error));
  return parts.join(' · ') || '—';
}

/** Replace an order's row in the list (if it is listed) with its current state. */
function refreshRow(o) {
  const body = $('#orders-table tbody');
  for (const tr of [...body.children]) {
    if (tr.dataset.orderNo === String(o.order_no)) {
      const row = orderRow(o);
      row.classList.toggle('selected', O.open === String(o.order_no));
      body.replaceChild(row, tr);
    }
  }
}

/** An order changed on the server (an alert names it): its listed row and open detail follow. */
export async function orderChanged(no) {
  if (O.open === no) {
    openOrder(no);
    return;
  }
  const listed = [...$('#orders-table tbody').children].some((tr) => tr.dataset.orderNo === no);
  if (!listed) return;
  try {
    refreshRow(await api('GET', `/api/orders/${encodeURIComponent(no)}`));
  } catch (err) {
    // gone or not allowed: the list keeps what it had until the next load
  }
}

function markSelected(no) {
  for (const tr of $('#orders-table tbody').children) tr.classList.toggle('selected', tr.dataset.orderNo === no);
}

/** Show one order with its trail (also from an alert's "工单 …" button). */
export async function openOrder(no) {
  O.open = no;
  markSelected(no);
  const box = $('#order-detail');
  replaceChildren(box, el('p', {class: 'muted'}, '加载中…'));
  let o;
  try {
    o = await api('GET', `/api/orders/${encodeURIComponent(no)}`);
  } catch (err) {
    if (O.open === no) replaceChildren(box, el('p', {class: 'error-text'}, err.message));
    return;
  }
  if (O.open !== no) return;
  refreshRow(o); // the list row shows what the detail shows
  const field = (label, value) => (value ? [el('dt', {}, label), el('dd', {}, String(value))] : null);
  const body = o.body && typeof o.body === 'object' ? o.body : {};
  const error = el('p', {class: 'error-text', role: 'alert'});
  // a returned order goes out again only corrected: the supervisor says what changed (更正说明)
  const correction = o.status === 'returned' ? el('textarea', {
    id: 'order-correction', rows: 2, maxlength: 500, placeholder: '更正说明（如：地址已核实为…，请按…办理）'}) : null;
  const retry = RETRYABLE.has(o.status) ? el('button', {
    id: 'order-retry', type: 'button', class: 'btn primary small',
    onclick: (e) => retryOrder(no, e.currentTarget, error, correction),
  }, o.status === 'returned' ? '更正后重发' : '重发') : null;
  const hint = {failed: '平台拒收：修正后可重发', local: '尚未送达平台：可重新发送',
    returned: '平台已退回：核实更正后作为同一工单重新派发'}[o.status] || '';
  replaceChildren(box,
    el('h3', {}, `工单 ${no} `, statusBadge(o.status)),
    el('dl', {class: 'fields'},
      field('通话', o.call_id), field('去向', targetText(o.target)), field('平台', o.platform),
      field('类别', o.category), field('部门', o.dept), field('号码', o.number),
      field('平台编号', o.platform_ref), field('创建', dateTime(o.created_at)), field('更新', dateTime(o.updated_at)),
      field('办结期限', o.deadline ? dateTime(o.deadline) : ''), field('送达', deliveryText(o)),
      field('地点', body.location), field('内容', body.excerpt || body.content)),
    retry ? el('div', {class: 'order-actions'}, correction, retry, el('span', {class: 'muted small'}, hint)) : null,
    error,
    el('h4', {}, '流转记录'),
    trailList(o.trail, {id: 'order-trail'}));
}

async function retryOrder(no, button, error, correction) {
  const note = correction ? correction.value.trim() : '';
  if (correction && !note) {
    error.textContent = '请填写更正说明再重发';
    return;
  }
  button.disabled = true;
  error.textContent = '';
  try {
    await api('POST', `/api/orders/${encodeURIComponent(no)}/retry`, note ? {note} : {});
    O.ctx.showMessage(`工单 ${no} 已重新排队发送`, 'info');
    await openOrder(no);
    loadOrders();
  } catch (err) {
    button.disabled = false;
    if (err.status !== 401) error.textContent = err.message; // 409: not retryable
  }
}
