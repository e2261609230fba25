// The suggestion card: what the router suggests for the selected call, built from the call's
// latest decision. The card is rebuilt only when its evidence changes (evidenceKey), so an
// identical decision arriving again does not make it flicker.

import {el} from './dom.js';
import {centre, dangerLabel, fraudDesk, linkFor, target, targetName, targetShort} from './config.js';
import {
  alternativesOf, chip, chipText, isFraud, matchesOf, percent, targetText, vetoGroups, vetoesOf,
} from './views.js';

export const FRAUD_NOTE = '紧急：立即提醒来电人停止转账，联系反诈中心止付';
export const DEGRADED_NOTE = '无实时建议（识别延迟/不可用）';

/** What the card shows depends on this, and on nothing else (the confidence is updated in place). */
export function evidenceKey(call) {
  if (!call) return 'none';
  const d = call.decision;
  const words = (ms) => [...new Set(ms.map(chipText))].sort();
  return JSON.stringify([
    call.id, Boolean(call.degraded), centre.suggestionsPaused,
    d ? [d.target, d.category_id || d.category || '', words(matchesOf(d)), words(vetoesOf(d)),
      alternativesOf(d).map((a) => a.target), Boolean(d.urgent)] : null,
  ]);
}

/** The target the one key transfers to without asking ('' when the router keeps the call). */
export function suggestedTarget(d) {
  if (centre.suggestionsPaused) return ''; // the centre stopped suggestions: the operator picks
  return d && d.target && d.target !== 'police' ? d.target : '';
}

/** Every target the router suggested for this decision (no confirmation needed for these). */
export function suggestedTargets(d) {
  const out = new Set();
  if (!d) return out;
  if (suggestedTarget(d)) out.add(d.target);
  if (!centre.suggestionsPaused) alternativesOf(d).forEach((a) => a.target && out.add(a.target));
  vetoGroups(d).forEach((g) => linkFor(g) && out.add(linkFor(g)));
  if (isFraud(d) && fraudDesk()) out.add(fraudDesk());
  return out;
}

/**
 * The card's content for a call.
 * Returns {classes, target, nodes, conf} — conf is the confidence element (updated in place
 * when only the confidence changes), or null.
 * actions: {bringIn(targetId), pickAlternative(targetId)}.
 */
export function buildCard(call, actions) {
  if (!call) return {classes: ['empty'], target: '', nodes: [el('p', {class: 'card-empty'}, '未选择来电')], conf: null};
  const d = call.decision;
  const nodes = [];
  if (call.degraded) nodes.push(el('p', {class: 'degraded-note', role: 'status'}, DEGRADED_NOTE));
  if (!d) {
    if (!call.degraded) {
      nodes.push(el('p', {class: 'card-kicker'}, '暂无建议'), el('p', {class: 'card-wait'}, '等待识别…（默认留 110 处理）'));
    }
    return {classes: call.degraded ? ['degraded'] : ['waiting'], target: '', nodes, conf: null};
  }
  let built;
  if (vetoesOf(d).length) built = vetoCard(d, actions); // danger is shown whatever the switches say
  else if (centre.suggestionsPaused && (d.target !== 'police' || alternativesOf(d).length)) built = pausedCard();
  else if (d.target === 'police' && alternativesOf(d).length) built = alternativesCard(d, actions);
  else if (d.target && d.target !== 'police') built = diversionCard(d);
  else built = keepCard(d);
  // the kind's content in an element of its own classes (#card .veto, #card .divert …)
  nodes.push(el('div', {class: `suggestion ${built.classes.join(' ')}`}, built.nodes));
  const classes = [...built.classes];
  if (d.urgent) classes.push('urgent');
  if (call.degraded) classes.push('degraded');
  return {classes, target: String(d.target || ''), nodes, conf: built.conf || null};
}

/** The centre stopped diversion suggestions: none is shown; the operator decides (and may still transfer). */
function pausedCard() {
  const who = centre.by ? `（${centre.by}）` : '';
  return {classes: ['paused'], nodes: [
    el('p', {class: 'card-kicker'}, '暂停分流'),
    el('p', {class: 'card-wait'}, `中心已暂停分流建议${who}。按接警规程处置；如需转接，请在「去向」中自行选择。`),
  ]};
}

function reason(d) {
  return d.reason ? el('p', {class: 'reason'}, el('span', {class: 'label'}, '理由：'), String(d.reason)) : null;
}

function confidence(d) {
  return el('span', {class: 'conf', title: '置信度'}, `置信度 ${percent(d.confidence)}`);
}

/** A diversion: the hotline, big; department, category, confidence, words, reason. */
function diversionCard(d) {
  const conf = confidence(d);
  const nodes = [
    el('p', {class: 'card-kicker'}, '建议分流'),
    el('div', {class: 'card-target'},
      // a service without a number (社会联动) shows its name in the number's place, not an internal id
      el('span', {class: target(d.target).number ? 'target-number' : 'target-number as-name'}, targetShort(d.target)),
      el('span', {class: 'target-name'}, targetName(d.target) === targetShort(d.target) ? '' : targetName(d.target))),
    el('p', {class: 'card-cat'},
      el('span', {class: 'category'}, String(d.category || d.category_id || '')),
      d.dept ? el('span', {class: 'dept'}, String(d.dept)) : null,
      conf),
    words('命中词', matchesOf(d), false),
    reason(d),
  ];
  return {classes: ['divert'], nodes, conf};
}

/** A danger veto: never divert; offer the linked urgent service; fraud is urgent. */
function vetoCard(d, actions) {
  const vetoes = vetoesOf(d);
  const groups = vetoGroups(d);
  const fraud = isFraud(d);
  const nodes = [
    el('p', {class: 'veto-title', role: 'alert'}, '不可分流：',
      el('span', {class: 'veto-words'}, [...new Set(vetoes.map(chipText))].join('、'))),
    el('p', {class: 'veto-groups'}, groups.map(dangerLabel).join('、') || '危险信号', '——留 110 处理'),
  ];
  const buttons = [];
  const offered = new Set();
  if (fraud) {
    nodes.push(el('p', {class: 'urgent-note'}, FRAUD_NOTE));
    const desk = fraudDesk();
    if (desk) {
      offered.add(desk);
      buttons.push(bringInButton(desk, `联系反诈中心 ${targetShort(desk)}`, actions));
    }
  }
  for (const g of groups) {
    const t = linkFor(g);
    if (t && !offered.has(t)) {
      offered.add(t);
      buttons.push(bringInButton(t, `联动 ${targetShort(t)}`, actions));
    }
  }
  if (buttons.length) nodes.push(el('div', {class: 'card-buttons'}, buttons));
  if (matchesOf(d).length) nodes.push(words('同时提到', matchesOf(d), false));
  nodes.push(reason(d));
  return {classes: fraud ? ['veto', 'fraud', 'urgent'] : ['veto'], nodes, conf: null};
}

function bringInButton(targetId, label, actions) {
  return el('button', {
    type: 'button', class: 'btn urgent-btn link-btn', dataset: {target: targetId},
    title: '三方通话：把该服务接入本通话', onclick: () => actions.bringIn(targetId),
  }, label, el('span', {class: 'sub'}, '（三方）'));
}

/** Two destinations tie: the call stays with 110, the operator picks one with one key. */
function alternativesCard(d, actions) {
  const nodes = [
    el('p', {class: 'alt-title'}, '两个去向证据相当，请选择'),
    el('div', {class: 'card-buttons alternatives'}, alternativesOf(d).map((a) => el('button', {
      type: 'button', class: 'btn alt-btn', dataset: {target: String(a.target || '')},
      onclick: () => actions.pickAlternative(a.target),
    },
    el('span', {class: 'alt-target'}, targetText(a.target)),
    el('span', {class: 'alt-cat'}, [a.category, a.dept].filter(Boolean).join(' · ')),
    el('span', {class: 'alt-words'}, (Array.isArray(a.evidence) ? a.evidence : []).map((m) => chip(m)))))),
    reason(d),
  ];
  return {classes: ['alt'], nodes, conf: null};
}

/** The router keeps the call and found nothing to divert. */
function keepCard(d) {
  const conf = typeof d.confidence === 'number' ? confidence(d) : null;
  const nodes = [
    el('p', {class: 'card-kicker'}, '不分流'),
    el('div', {class: 'card-target keep'}, el('span', {class: 'target-number'}, '留 110 处理')),
    conf ? el('p', {class: 'card-cat'}, conf) : null,
    matchesOf(d).length ? words('提到', matchesOf(d), false) : null,
    reason(d),
  ];
  return {classes: ['keep'], nodes, conf};
}

function words(label, matches, danger) {
  if (!matches.length) return null;
  const seen = new Set();
  const chips = [];
  for (const m of matches) {
    const key = chipText(m);
    if (seen.has(key)) continue;
    seen.add(key);
    chips.push(chip(m, danger));
  }
  return el('div', {class: 'chips'}, el('span', {class: 'label'}, `${label}：`), chips);
}
