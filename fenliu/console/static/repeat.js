// Repeat callers (防回流). Right after call_started the follow-through says whether this number
// called within the flow-back window about something that was (or was to be) diverted
// (event repeat_caller), and when the router then names the same matter, that the matter came
// back (repeat_same_matter). The card shows both before the operator decides.
//
// GET /api/calls carries the two notes merged into one object (`repeat`): when it is the same
// matter its `text` is the same-matter text, so the repeat line is rebuilt from count/prior.

import {clear, dateTime, el, replaceChildren} from './dom.js';
import {targetText} from './views.js';

/**
 * Fold a note into a live call's `repeat` ({caller, same}). kind: 'repeat_caller',
 * 'repeat_same_matter', or 'snapshot' (the merged `repeat` of GET /api/calls).
 */
export function foldRepeat(call, kind, data) {
  if (!data || typeof data !== 'object') return;
  const r = call.repeat || {caller: null, same: null};
  if (kind === 'repeat_caller') {
    r.caller = data;
  } else if (kind === 'repeat_same_matter') {
    r.same = data;
  } else if (data.same_matter) {
    r.same = data;
    const {count, window_days: days, prior} = data;
    if (!r.caller && (count !== undefined || prior !== undefined)) r.caller = {count, window_days: days, prior, text: ''};
  } else {
    r.caller = data;
  }
  call.repeat = r;
}

const strip = (text, prefix) => {
  const t = String(text || '').trim();
  return t.startsWith(prefix) ? t.slice(prefix.length).replace(/^[：:\s]+/, '') : t;
};

/** The repeat line without its heading: the server's text, else built from its fields. */
function callerText(c) {
  if (!c) return '';
  if (c.text && String(c.text).startsWith('重复来电')) return strip(c.text, '重复来电');
  const prior = Array.isArray(c.prior) ? c.prior : [];
  const parts = [];
  if (c.count !== undefined) {
    parts.push(`此号码${c.window_days ? ` ${c.window_days} 天内` : '近期'}第 ${(Number(c.count) || prior.length) + 1} 次来电`);
  }
  const last = prior[0];
  if (last) {
    parts.push(`上次${last.diverted ? '已分流至' : '建议分流至'} ${targetText(last.target) || '—'}`
      + (last.category ? `（${last.category}）` : '')
      + (last.order_no ? `，工单 ${last.order_no} ${last.order_status || ''}`.trimEnd() : ''));
  }
  return parts.join('；') || strip(c.text, '重复来电');
}

/** Show the call's repeat notes in #repeat-banner (hidden when there are none). */
export function renderRepeatBanner(node, call) {
  const r = call && call.repeat;
  if (!r || (!r.caller && !r.same)) {
    if (!node.hidden || node.firstChild) {
      node.hidden = true;
      delete node.dataset.sameMatter;
      delete node.dataset.key;
      clear(node);
    }
    return;
  }
  const key = JSON.stringify([call.id, r]);
  if (node.dataset.key === key) return; // unchanged: do not re-announce
  node.dataset.key = key;
  node.hidden = false;
  if (r.same) node.dataset.sameMatter = '1';
  else delete node.dataset.sameMatter;
  const prior = r.caller && Array.isArray(r.caller.prior) ? r.caller.prior.slice(0, 3) : [];
  replaceChildren(node,
    el('p', {class: 'repeat-line'}, el('strong', {class: 'repeat-title'}, '重复来电'), ' ',
      el('span', {class: 'repeat-text'}, callerText(r.caller) || '此号码近期来电过')),
    r.same ? el('p', {class: 'same-matter'}, el('strong', {}, '同一事项回流'), ' ',
      el('span', {}, strip(r.same.text, '同一事项回流') || `${r.same.category || ''}（请核实办理情况）`)) : null,
    // the earlier calls fold away: the note stays two lines at most under the card
    prior.length ? el('details', {class: 'repeat-more'}, el('summary', {}, `此前 ${prior.length} 次来电`),
      el('ul', {class: 'repeat-prior'}, prior.map((p) => el('li', {},
        el('span', {class: 'time'}, dateTime(p.started_at)), ' ',
        [p.category, p.target ? `${p.diverted ? '→' : '建议'} ${targetText(p.target)}` : '',
          p.order_no ? `工单 ${p.order_no}${p.order_status ? ` ${p.order_status}` : ''}` : '']
          .filter(Boolean).join(' · '))))) : null);
}

/** A badge for the calls list: "回流" (same matter) or "重复" (repeat caller), or null. */
export function repeatBadge(call) {
  const r = call && call.repeat;
  if (!r || (!r.caller && !r.same)) return null;
  return r.same ? el('span', {class: 'badge flowback', title: '同一事项回流'}, '回流')
    : el('span', {class: 'badge repeat', title: '重复来电'}, '重复来电');
}
