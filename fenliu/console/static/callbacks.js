// 待回拨 (every operator and supervisor): the callers whose call fenliu ended or lost — an
// instance gone, a crash, a bound reached — with their number, when and what was heard, until
// someone presses 已回拨 (POST /api/callbacks/{id}/done). The list reloads when the stream says it
// changed (kind "callbacks_changed"), when a call ends by fenliu's hand, and after a reconnect.

import {api} from './api.js';
import {$, el, replaceChildren, timeOfDay} from './dom.js';

const B = {generation: 0, ctx: null};

/** ctx: {showError(err), showMessage(text, kind)}. */
export function initCallbacks(ctx) {
  B.ctx = ctx;
}

/** Did fenliu itself end this call (its reason says so)? Then its caller is on the list. */
export function endedByFenliu(reason) {
  const r = String(reason || '');
  return r.startsWith('fenliu') || r.includes('lost');
}

export async function loadCallbacks() {
  const generation = ++B.generation;
  let data;
  try {
    data = await api('GET', '/api/callbacks');
  } catch (err) {
    if (err.status !== 401 && B.ctx) B.ctx.showError(err);
    return;
  }
  if (generation !== B.generation) return; // a newer load is on its way
  render(Array.isArray(data.callbacks) ? data.callbacks : []);
}

function render(rows) {
  const box = $('#callbacks');
  box.hidden = rows.length === 0;
  $('#callbacks-count').textContent = String(rows.length);
  replaceChildren($('#callbacks-list'), rows.map((r) => el('li', {'data-callback-id': String(r.id)},
    el('div', {class: 'cb-head'},
      el('strong', {class: 'cb-number'}, String(r.number || '未知号码')),
      el('span', {class: 'time'}, timeOfDay(Number(r.at) || 0))),
    el('div', {class: 'cb-reason muted small'}, String(r.reason || '')),
    r.heard ? el('div', {class: 'cb-heard small'}, String(r.heard).slice(-120)) : '',
    el('button', {type: 'button', class: 'btn small cb-done', onclick: () => done(r.id)}, '已回拨'))));
}

async function done(id) {
  try {
    await api('POST', `/api/callbacks/${encodeURIComponent(id)}/done`, {});
  } catch (err) {
    if (B.ctx) B.ctx.showError(err);
  }
  loadCallbacks();
}
