// Chinese labels and small view builders shared by the live view and the history.

import {el, highlight, timeOfDay} from './dom.js';
import {dangerLabel, targetName, targetShort} from './config.js';

export const ROLE_LABELS = {operator: '话务员', supervisor: '班长', admin: '管理员'};
export const STATE_LABELS = {
  ringing: '振铃', talking: '通话中', transferring: '转接中', consulted: '已咨询',
  'three-way': '三方通话', 'handed-over': '已移交', ended: '已结束',
};
export const LEG_LABELS = {caller: '来电人', operator: '接警员', hotline: '热线'};
export const TRANSFER_LABELS = {
  completed: '已完成', bridged: '三方通话', failed: '失败', consulted: '已咨询',
  started: '已发起', progress: '振铃中', cancelled: '已取消',
};

export const roleLabel = (role) => ROLE_LABELS[role] || String(role || '');
export const stateLabel = (state) => STATE_LABELS[state] || String(state || '');
export const legLabel = (leg) => LEG_LABELS[leg] || String(leg || '');
export const isSupervisor = (role) => role === 'supervisor' || role === 'admin';

/** A target as read on the card: "12345 政务服务便民热线" (number, then name). */
export function targetText(id) {
  if (!id) return '';
  const short = targetShort(id);
  const name = targetName(id);
  return name && name !== short ? `${short} ${name}` : short;
}

/** How a match reads: the word; "heard≈word" for a homophone; the matched stretch of a pattern. */
export function chipText(m) {
  if (!m) return '';
  if (m.kind === 'homophone' && m.heard) return `${m.heard}≈${m.word}`;
  if (m.kind === 'pattern' && m.heard) return `「${m.heard}」`;
  return String(m.word || m.heard || '');
}

const list = (v) => (Array.isArray(v) ? v : []);
export const matchesOf = (d) => list(d && d.matched);
export const vetoesOf = (d) => list(d && d.vetoed_by);
export const alternativesOf = (d) => list(d && d.alternatives);

/** The danger groups of a decision's vetoes, in order, without repeats. */
export const vetoGroups = (d) => [...new Set(vetoesOf(d).map((m) => m.group).filter(Boolean))];

/** Is this decision about fraud (urgent: stop the payment)? */
export function isFraud(d) {
  if (!d) return false;
  if (vetoesOf(d).some((m) => m.group === 'fraud')) return true;
  return /fraud|诈骗|反诈/i.test(`${d.category_id || ''} ${d.reason || ''}`);
}

/**
 * What to mark in transcript lines for a decision: each match by the text heard (else the
 * word); the word too, when it differs (an ASR near-miss may still contain it). Danger words
 * get the red class.
 */
export function needlesOf(d) {
  const out = [];
  const add = (m, danger) => {
    for (const text of new Set([m.heard, m.word])) {
      if (typeof text === 'string' && text.trim()) out.push({text, cls: danger ? 'danger' : 'hit', danger});
    }
  };
  matchesOf(d).forEach((m) => add(m, false));
  vetoesOf(d).forEach((m) => add(m, true));
  return out;
}

/** A word chip. */
export function chip(m, danger = false) {
  return el('span', {class: danger ? 'chip danger' : 'chip', title: danger ? dangerLabel(m.group) : (m.kind || '')}, chipText(m));
}

/** One transcript line: leg label and the text with the decision's words marked. */
export function utteranceEl(u, needles, {partial = false} = {}) {
  const leg = String(u.leg || '');
  const line = el('div', {
    class: `utt ${partial ? 'partial' : 'final'}`,
    dataset: {leg, uttId: String(u.utterance_id ?? '')},
  });
  const text = el('span', {class: 'text'});
  text.append(highlight(u.text, needles));
  line.append(el('span', {class: 'who', title: u.at ? timeOfDay(u.at) : ''}, legLabel(leg)), text);
  if (u.source === 'reference') {
    // a fixture's reference text standing in for recognition (no Chinese model): never pass it off as heard
    line.classList.add('reference');
    line.append(el('span', {class: 'ref-tag', title: '没有中文模型：录音的参考文本代替识别结果'}, '参考文本（非识别）'));
  }
  return line;
}

/**
 * The caller's number as the operator reads it: the user part of a SIP address
 * ('"caller" <sip:138****0000@pbx>' -> '138****0000'), else the text as given.
 */
export function displayNumber(remote) {
  const text = String(remote || '');
  const m = text.match(/sips?:([^@;>\s]+)@/i) || text.match(/^(?:tel:)?([+\d*#]+)$/i);
  return m ? m[1] : text;
}

const STEP_LABELS = {
  requested: '已请求', started: '呼叫中', dialing: '呼叫中', progress: '振铃中', answered: '已接听',
  consulted: '已咨询', bridged: '三方通话中', completed: '已完成', failed: '失败', ended: '已结束', unknown: '无进度',
};

/** A failed transfer the operator cancelled (Esc): not a failure, the caller is still with 110. */
export function isCancelled(t) {
  return Boolean(t) && Number(t.status || t.sip_status) === 487 && /cancel/i.test(String(t.reason || ''));
}

// why a hotline did not take the caller, in the operator's words (the SIP status decides)
const FAILURE_TEXTS = {
  486: '热线忙', 600: '热线忙', 480: '热线暂时无人接听', 408: '热线无应答（超时）', 487: '呼叫已取消',
  404: '热线号码不存在', 484: '热线号码不完整', 403: '热线拒绝接入', 603: '热线拒接', 503: '热线暂不可用',
  500: '热线系统故障', 502: '热线线路故障', 504: '热线线路超时', 488: '热线不支持该通话格式',
};

/** "热线忙（486）" — a failed transfer's reason in Chinese; the worker's own words only when unmapped. */
export function failureText(t) {
  const status = Number(t && (t.status || t.sip_status)) || 0;
  const reason = String((t && t.reason) || '');
  if (/hung up within|min_talk/i.test(reason)) return `热线接听后很快挂断${status ? `（${status}）` : ''}`;
  if (/caller hung up|caller left/i.test(reason)) return '来电人已挂机';
  const text = FAILURE_TEXTS[status] || reason || '未知原因';
  return status ? `${text}（${status}）` : text;
}

/** One line for a call's transfer: "转接 12345（三方通话）· 已完成". */
export function transferSummary(t, modeLabels) {
  if (!t || !t.step) return '';
  const mode = modeLabels[t.mode] || t.mode || '';
  const step = t.step === 'failed' && isCancelled(t) ? '已取消' : STEP_LABELS[t.step] || t.step;
  return `转接 ${targetShort(t.target) || '—'}${mode ? `（${mode}）` : ''} · ${step}`;
}

/** "87%" from a confidence in 0..1. */
export const percent = (x) => (typeof x === 'number' && isFinite(x) ? `${Math.round(x * 100)}%` : '—');
