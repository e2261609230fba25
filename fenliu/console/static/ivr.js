// The IVR front desk (语音前台, docs/flows.md) on a live call. When no operator was free, a flow
// answered the caller, listened, and either offered a hotline by key or handed the call to the
// operators' queue — urgent when it heard a danger signal or was unsure. Each step comes as the
// event ivr_step ({flow, state, step, detail, urgent, outcome}); the queue's own steps as
// queue_dialing / queue_answered / queue_failed; a busy seat as overflowed. GET /api/calls
// carries the latest step folded (`ivr`), urgency kept once raised.
//
// The banner says in Chinese where the caller is, keeps what the caller said and why the call
// is urgent (for the operator who gets it from the queue), and is red when urgent; the calls
// list shows the same line, a 紧急 badge, and puts urgent calls first.

import {clear, el, replaceChildren} from './dom.js';
import {targetShort} from './config.js';
import {vetoesOf} from './views.js';

// Details the runner gives in English that say nothing the step does not already say.
const GENERIC = new Set(['an operator took the call', 'caller hung up', 'nothing said', 'speech']);
const MAX_WHY = 40; // characters of the reason in the banner's title (the full reason is a line below)

const str = (v) => (v === undefined || v === null ? '' : String(v));

/**
 * Fold an event into a live call's `ivr`. kind: 'ivr_step', 'overflowed', 'queue_dialing',
 * 'queue_answered', 'queue_failed', or 'snapshot' (the `ivr` of GET /api/calls).
 */
export function foldIvr(call, kind, data) {
  if (!data || typeof data !== 'object') return;
  const r = call.ivr || {
    flow: '', state: '', step: '', detail: '', urgent: false, outcome: '', overflow: null, queue: '',
    queueNote: '', heard: '', why: '', danger: '', branch: '', offer: [], choice: '', target: '', transferNote: '',
  };
  call.ivr = r;
  if (kind === 'overflowed') {
    r.overflow = {status: Number(data.status) || 0, reason: str(data.reason)};
    return;
  }
  if (kind.startsWith('queue_')) {
    r.queue = kind.slice('queue_'.length);
    r.queueNote = r.queue === 'failed'
      ? [str(data.reason), Number(data.status) ? `(${data.status})` : ''].filter(Boolean).join(' ') : '';
    return;
  }
  if (kind !== 'ivr_step' && kind !== 'snapshot') return;
  const step = str(data.step);
  const detail = str(data.detail);
  r.flow = str(data.flow || r.flow);
  r.state = str(data.state || r.state);
  r.step = step;
  r.detail = detail;
  r.urgent = r.urgent || Boolean(data.urgent);
  r.outcome = str(data.outcome || r.outcome);
  if (kind === 'snapshot') {
    // fields a later server may fold in as well: take them when they are there
    if (data.heard) r.heard = str(data.heard);
    if (data.reason) r.why = str(data.reason);
    if (data.queue) r.queue = str(data.queue);
    if (data.overflow && typeof data.overflow === 'object') {
      r.overflow = {status: Number(data.overflow.status) || 0, reason: str(data.overflow.reason)};
    }
  }
  switch (step) {
    case 'heard':
      if (detail) r.heard = detail;
      break;
    case 'danger':
      r.danger = detail || r.danger || '危险信号';
      r.urgent = true;
      break;
    case 'decide': {
      const at = detail.indexOf(': ');
      r.branch = at > 0 ? detail.slice(0, at) : detail;
      const why = at > 0 ? detail.slice(at + 2) : '';
      if (r.branch === 'danger' && why && !r.danger) r.danger = why;
      if (why && r.branch !== 'divert') r.why = why;
      break;
    }
    case 'offer':
      r.offer = detail.split(',').map((part) => part.trim().split('='))
        .filter((kv) => kv.length === 2 && kv[0] && kv[1]).map(([key, target]) => ({key, target}));
      break;
    case 'key': {
      const arrow = detail.split('→');
      if (arrow.length === 2) r.choice = arrow[1].trim();
      break;
    }
    case 'queue':
      if (detail) r.why = detail;
      if (r.queue === 'answered') r.queue = ''; // handed to the queue again
      break;
    case 'queue_failed':
      r.queue = 'failed';
      r.queueNote = detail;
      break;
    case 'queued':
      r.queue = 'answered';
      break;
    case 'transferred':
      r.target = detail || r.choice;
      break;
    case 'transfer_failed':
      r.transferNote = detail;
      break;
    default:
      break;
  }
  if (r.outcome === 'queued') r.queue = 'answered';
  if (r.outcome === 'transferred' && !r.target) r.target = detail || r.choice;
}

/** Is the call marked urgent by the front desk (sorted first, red)? */
export const ivrUrgent = (call) => Boolean(call && call.ivr && call.ivr.urgent);

/** "IVR：危险信号，紧急转人工（…）" → "危险信号，紧急转人工（…）". */
const plain = (text) => str(text).replace(/^IVR\s*(转人工)?\s*[：:]\s*/, '').trim();

const cut = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

/** Why the front desk sent the call on (urgent or not): the full text, '' when not known. */
function whyText(r, decision) {
  if (r.danger) return plain(r.danger);
  if (r.why && !GENERIC.has(r.why)) return plain(r.why);
  if (r.urgent) {
    // a reloaded page knows the last step only: the danger is in the call's latest decision
    const vetoes = vetoesOf(decision);
    if (vetoes.length && decision.reason) return str(decision.reason);
    if (vetoes.length) return `危险信号：${[...new Set(vetoes.map((m) => str(m.word || m.heard)))].join('、')}`;
  }
  return '';
}

/** The reason as short as the title wants it: "危险信号（持械/凶器）：刀" (the part before "——"). */
function shortWhy(r, decision) {
  const why = whyText(r, decision);
  if (!why) return '';
  return cut(why.split('——')[0].trim(), MAX_WHY);
}

const urgentTag = (r, decision) => {
  if (!r.urgent) return '';
  const why = shortWhy(r, decision);
  return why ? `（紧急：${why}）` : '（紧急）';
};

function offerText(offer) {
  return offer.map((o) => `${targetShort(o.target)}（按${o.key}）`).join('、');
}

/** The banner's headline for where the caller is now. */
export function ivrTitle(call) {
  const r = call && call.ivr;
  if (!r) return '';
  const d = call.decision;
  if (r.queue === 'answered' || r.outcome === 'queued') return `语音前台已转人工${r.urgent ? '（紧急）' : ''}`;
  if (r.outcome === 'transferred') return `语音前台：已转接 ${targetShort(r.target) || '热线'}`;
  if (r.outcome === 'caller_left') return '语音前台：来电人已挂机';
  if (r.outcome === 'hung_up') return '语音前台：已挂断';
  if (r.queue === 'dialing' || r.queue === 'failed' || r.step === 'queue' || r.step === 'queue_failed') {
    return `语音前台 → 接警员队列${urgentTag(r, d)}`;
  }
  const detail = r.detail;
  switch (r.step) {
    case '':
      return r.overflow ? '坐席忙，已由语音前台接听' : '语音前台';
    case 'play':
      return '语音前台：正在播放提示语';
    case 'barge_in':
      return detail.startsWith('key') ? `语音前台：来电人按键 ${detail.slice(3).trim()}` : '语音前台：正在听取来电内容';
    case 'listen':
      return '语音前台：正在听取来电内容';
    case 'heard':
      return '语音前台：已听取来电内容，正在判断';
    case 'no_input':
      return '语音前台：来电人未说话';
    case 'danger':
      return `语音前台：听到危险信号${urgentTag(r, d)}`;
    case 'decide':
      return {
        danger: `语音前台：有危险信号，转接警员${urgentTag(r, d)}`,
        unsure: `语音前台：无法确定，转接警员${urgentTag(r, d)}`,
        police: '语音前台：属警情，转接警员',
        divert: '语音前台：可由热线受理',
      }[r.branch] || '语音前台：正在判断';
    case 'offer':
      return r.offer.length ? `语音前台：已提示转接 ${offerText(r.offer)}` : '语音前台：等待来电人按键';
    case 'collect':
      return '语音前台：等待来电人按键';
    case 'key': {
      const key = detail.split('→')[0].trim();
      return r.choice ? `语音前台：来电人按${key}，转接 ${targetShort(r.choice)}` : `语音前台：来电人按键 ${key}`;
    }
    case 'retry':
      return '语音前台：未收到有效按键，重新提示';
    case 'give_up':
      return '语音前台：未收到有效按键';
    case 'transfer':
      return `语音前台：正在转接 ${targetShort(r.choice) || '热线'}`;
    case 'transferred':
      return `语音前台：已转接 ${targetShort(r.target) || '热线'}`;
    case 'transfer_failed':
      return `语音前台：转接 ${targetShort(r.choice) || '热线'} 失败`;
    case 'sms':
      return '语音前台：已向来电人发送短信';
    case 'hangup':
      return '语音前台：正在挂断';
    case 'end':
      return '语音前台：来电人已挂机';
    default:
      return `语音前台：${r.state || r.step}`;
  }
}

/** The lines under the headline: the seat that was busy, the queue, what was heard, why. */
function ivrLines(call) {
  const r = call.ivr;
  const lines = [];
  if (r.overflow) {
    const o = r.overflow;
    const code = [o.status || '', o.reason].filter(Boolean).join(' ');
    lines.push(['overflow', '', `坐席忙，已由语音前台接听${code ? `（坐席 ${code}）` : ''}`]);
  }
  if (r.queue === 'dialing') lines.push(['queue', '', '正在呼叫接警员…']);
  else if (r.queue === 'failed') lines.push(['queue', '', `接警员未接听，继续等待并重拨${r.queueNote ? `（${r.queueNote}）` : ''}`]);
  if (r.heard) lines.push(['heard', '来电人说：', r.heard]);
  const why = whyText(r, call.decision);
  if (why) lines.push(['why', r.urgent ? '紧急原因：' : '原因：', why]);
  if (r.transferNote && r.step === 'transfer_failed') lines.push(['transfer', '转接失败：', r.transferNote]);
  return lines;
}

/** Show the call's front-desk state in #ivr-banner (hidden for a call the flow never had). */
export function renderIvrBanner(node, call) {
  const r = call && call.ivr;
  if (!r) {
    if (!node.hidden || node.firstChild) {
      node.hidden = true;
      for (const k of ['key', 'urgent', 'step', 'outcome', 'queue']) delete node.dataset[k];
      clear(node);
    }
    return;
  }
  const title = ivrTitle(call);
  const lines = ivrLines(call);
  node.dataset.urgent = r.urgent ? '1' : '0';
  node.dataset.step = r.step;
  node.dataset.outcome = r.outcome;
  node.dataset.queue = r.queue;
  const key = JSON.stringify([call.id, title, lines, r.urgent]);
  if (node.dataset.key === key) return; // what it says is unchanged: do not re-announce
  node.dataset.key = key;
  node.hidden = false;
  replaceChildren(node,
    el('p', {class: 'ivr-title'}, r.urgent ? el('span', {class: 'badge ivr-urgent'}, '紧急') : null,
      el('span', {class: 'ivr-text'}, title)),
    lines.length ? el('ul', {class: 'ivr-lines'}, lines.map(([kind, label, text]) => el('li', {dataset: {kind}},
      label ? el('span', {class: 'label'}, label) : null, text))) : null);
}

/** The calls list: a line under the number, or null. */
export function ivrRowLine(call) {
  if (!call || !call.ivr) return null;
  const title = ivrTitle(call);
  const why = whyText(call.ivr, call.decision);
  return el('div', {class: 'ivr-line small', title: why ? `${title}\n${why}` : title}, title);
}

/** The calls list: the 紧急 badge of an urgent front-desk call, or null. */
export function ivrBadge(call) {
  return ivrUrgent(call) ? el('span', {class: 'badge ivr-urgent', title: '语音前台标记为紧急'}, '紧急') : null;
}
