// fenliu operator console: login, live calls, live transcript, suggestion card, the one key,
// transfer progress, urgent lane, history, supervisor extras. Built against docs/api.md.
// The supervisors' pages (统计, 工单, 告警, 线索) live in stats.js, orders.js, alerts.js and
// leads.js; the repeat-caller banner in repeat.js; the IVR front desk's banner (语音前台) in ivr.js;
// the history's 闭环 section in loop.js.
//
// Data flow: GET /api/calls gives each live call with the events already folded in (up to its
// last_event_id); the WebSocket then brings every later event. Each live call keeps a short log
// of its events so that, when the operator selects it, GET /api/calls/{id} (utterances so far)
// can be completed with the events that came after that snapshot.

import {$, $$, clear, clock, el, highlight, replaceChildren, setTimeZone, timeOfDay} from './dom.js';
import {ApiError, api, callPath, setCsrf, setUnauthorizedHandler} from './api.js';
import {ENDED_TEXT, EventStream} from './stream.js';
import {
  MODE_LABELS, centre, conf, dangerLabel, learnDangerLabels, loadConfig, setCentre, targetName, targetShort, urgentTargets,
} from './config.js';
import {buildCard, evidenceKey, suggestedTarget, suggestedTargets} from './card.js';
import {historyTargets, initHistory, search as historySearch, showDetail as showHistoryDetail} from './history.js';
import {foldRepeat, renderRepeatBanner, repeatBadge} from './repeat.js';
import {foldIvr, ivrBadge, ivrRowLine, ivrUrgent, renderIvrBanner} from './ivr.js';
import {alertAckedEvent, alertEvent, initAlerts, loadAlerts, resetAlerts} from './alerts.js';
import {endedByFenliu, initCallbacks, loadCallbacks} from './callbacks.js';
import {initOrders, loadOrders, openOrder, orderChanged} from './orders.js';
import {initStats, resetStats, showStats} from './stats.js';
import {initLeads, loadLeads} from './leads.js';
import {
  chipText, displayNumber, failureText, isCancelled, isFraud, isSupervisor, needlesOf, roleLabel, stateLabel, targetText,
  transferSummary,
  utteranceEl, vetoGroups, vetoesOf,
} from './views.js';

const ENDED_LINGER_MS = 5000; // an ended call stays in the live list this long, marked ended
const LOG_LIMIT = 3000; // events remembered per live call (to complete a detail snapshot)
const REQUEST_STALE_MS = 20000; // a transfer request with no event after it this long is given up
const SESSION_EXPIRED = '会话已过期，请重新登录';

// Transfer steps during which the hotline is being dialled or is ringing (cancel possible),
// and all the steps of a transfer that is still going on (the one key waits).
const DIALLING = new Set(['requested', 'started', 'dialing', 'progress']);
const ACTIVE = new Set(['requested', 'started', 'dialing', 'progress', 'answered', 'consulted', 'bridged']);
// Worker-level events (only supervisors and admins receive them): shown in the banner.
const SUPERVISOR_KINDS = new Set(['worker_lost', 'restart_failed', 'front_event', 'worker_restarted',
  'orphans_released', 'call_rejected']);
// The views: tab button and page of each (the last four for supervisors only), in Alt+1… order.
const TABS = {
  live: '#live', history: '#history', stats: '#page-stats', orders: '#page-orders', alerts: '#page-alerts',
  leads: '#page-leads',
};
const SUPERVISOR_TABS = new Set(['stats', 'orders', 'alerts', 'leads']);

window.fenliu = {lastEventId: 0, connected: false};

const S = {
  user: null, // {name, role, seat}
  calls: new Map(), // live calls by id (see makeCall)
  sel: null, // the selected call (stays shown after it ended)
  view: null, // the transcript view of the selected call: {callId, loaded, applied, lines}
  cardKey: '', // evidenceKey of what the card shows
  cardConf: null, // the card's confidence element
  pick: {callId: null, key: null}, // the operator changed the target picker for this call+evidence
  reloading: null, // a GET /api/calls in flight (events wait in `pending` meanwhile)
  reloadAgain: false,
  pending: [],
  clockOffset: 0, // server clock minus ours, seconds
  stickBottom: true, // the transcript follows new lines
  tab: 'live',
  dialog: null, // the open confirm dialog
};

const stream = new EventStream({
  onHello: (msg, resumed) => {
    if (typeof msg.at === 'number') S.clockOffset = msg.at - Date.now() / 1000;
    if (!resumed) {
      // Everything before the hello is folded into the snapshot about to be loaded, and the
      // ids of a new server run start again: forget the logged events and their ids.
      for (const c of S.calls.values()) c.log = [];
      if (S.view) S.view.applied = 0;
      reloadCalls();
      loadCallbacks(); // callers to call back, also those added while the stream was down
      if (supervisorUser()) loadAlerts(); // alerts raised while the stream was down
    }
  },
  onEvent: (ev) => handleEvent(ev),
  onStatus: (connected) => showConnection(connected),
  onEnded: (reason) => sessionEnded(ENDED_TEXT[reason] || '会话已结束，请重新登录'),
  beforeReconnect: async () => {
    try {
      await api('GET', '/api/me');
      return true;
    } catch (err) {
      return !(err instanceof ApiError && err.status === 401); // 401: the handler logged out
    }
  },
});

// ---------------------------------------------------------------------------------------------
// Login, logout, session
// ---------------------------------------------------------------------------------------------

// A hint (not a secret) that this browser has logged in: without it the first page load shows the
// login form at once instead of asking GET /api/me for a 401.
const LOGGED_IN_HINT = 'fenliu.loggedIn';

function loginHint(on) {
  try {
    if (on) localStorage.setItem(LOGGED_IN_HINT, '1');
    else localStorage.removeItem(LOGGED_IN_HINT);
  } catch (err) {
    // storage disabled: every load asks /api/me
  }
}

function hasLoginHint() {
  try {
    return localStorage.getItem(LOGGED_IN_HINT) !== null;
  } catch (err) {
    return true;
  }
}

async function boot() {
  setUnauthorizedHandler(() => sessionEnded(SESSION_EXPIRED));
  wireStaticControls();
  initHistory(showError, supervisorUser);
  const pages = {showError, showMessage, openOrder: (no) => {
    showTab('orders');
    openOrder(no);
  }, openCall: (id) => {
    showTab('history');
    showHistoryDetail(id);
  }};
  initStats(pages);
  initOrders(pages);
  initAlerts(pages);
  initCallbacks(pages);
  initLeads(pages);
  if (!hasLoginHint()) {
    showLogin('');
    return;
  }
  let me;
  try {
    me = await api('GET', '/api/me', undefined, {handle401: true});
  } catch (err) {
    showLogin(err.status === 401 ? '' : err.message);
    return;
  }
  await start(me);
}

function showLogin(message) {
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  const form = $('#login-form');
  form.elements.password.value = '';
  (form.elements.username.value ? form.elements.password : form.elements.username).focus();
}

async function onLoginSubmit(e) {
  e.preventDefault();
  const form = e.currentTarget;
  const button = $('#login-submit');
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  if (!username || !password) {
    $('#login-error').textContent = '请输入用户名和密码';
    return;
  }
  button.disabled = true;
  $('#login-error').textContent = '';
  try {
    const data = await api('POST', '/api/login', {username, password}, {handle401: true});
    await start(data);
  } catch (err) {
    $('#login-error').textContent = err.message;
    form.elements.password.value = '';
    form.elements.password.focus();
  } finally {
    button.disabled = false;
  }
}

/** Logged in: `data` is the answer of POST /api/login or GET /api/me ({user, csrf}). */
async function start(data) {
  const user = data.user || data;
  setCsrf(data.csrf);
  loginHint(true);
  S.user = {name: String(user.name || ''), role: String(user.role || 'operator'), seat: String(user.seat || '')};
  try {
    const config = await api('GET', '/api/config');
    loadConfig(config);
    setTimeZone(config.timezone || '');
    setCentre(config.controls);
  } catch (err) {
    if (err.status === 401) return; // back at the login form
    showError(err);
  }
  $('#login').hidden = true;
  $('#app').hidden = false;
  renderHeader();
  renderModeAndTargets();
  renderUrgentLane();
  historyTargets();
  const supervisor = isSupervisor(S.user.role);
  $('#neglist').hidden = !supervisor;
  for (const tab of SUPERVISOR_TABS) $(`#tab-${tab}`).hidden = !supervisor;
  loadNegativeList(supervisor);
  if (supervisor) loadAlerts();
  showTab('live');
  renderSelection();
  stream.reset();
  stream.start();
  reloadCalls();
}

/** The session ended (401) or the user logged out: drop everything, show the login form. */
function sessionEnded(message) {
  if (!S.user && !$('#login').hidden) return;
  teardown();
  showLogin(message);
}

function teardown() {
  loginHint(false);
  stream.stop();
  closeDialog(false);
  S.user = null;
  for (const c of S.calls.values()) clearTimeout(c.removeTimer);
  S.calls.clear();
  S.sel = null;
  S.view = null;
  S.pending = [];
  S.cardKey = '';
  clear($('#calls'));
  clear($('#transcript'));
  clear($('#banner-list'));
  $('#banner').hidden = true;
  renderRepeatBanner($('#repeat-banner'), null);
  renderIvrBanner($('#ivr-banner'), null);
  for (const tab of SUPERVISOR_TABS) $(`#tab-${tab}`).hidden = true;
  resetAlerts();
  resetStats();
  clear($('#orders-table tbody'));
  clear($('#leads-list'));
  hideMessage();
  setCsrf('');
}

const supervisorUser = () => Boolean(S.user && isSupervisor(S.user.role));

async function logout() {
  try {
    await api('POST', '/api/logout', {}, {handle401: true});
  } catch (err) {
    // the session is gone either way
  }
  teardown();
  showLogin('');
}

/** The centre-wide switches: a banner for everybody, the two buttons for supervisors. */
function renderCentre() {
  const off = [centre.suggestionsPaused ? '分流建议' : '', centre.ivrOffersPaused ? '语音前台分流' : '']
    .filter(Boolean);
  const banner = $('#centre-banner');
  banner.hidden = off.length === 0;
  banner.textContent = off.length ? `中心已暂停${off.join('、')}${centre.by ? `（${centre.by}` : ''}`
    + `${centre.by && centre.at ? ` ${timeOfDay(centre.at)}）` : centre.by ? '）' : ''}` : '';
  $('#centre-controls').hidden = !supervisorUser();
  const pair = [['#btn-pause-suggestions', centre.suggestionsPaused, '分流建议'],
    ['#btn-pause-ivr', centre.ivrOffersPaused, '语音分流']];
  for (const [id, on, what] of pair) {
    $(id).setAttribute('aria-pressed', on ? 'true' : 'false');
    $(id).textContent = on ? `恢复${what}` : `暂停${what}`;
  }
  S.cardKey = ''; // the card follows the switch
  if (S.user) renderCard();
}

async function throwSwitch(name, on) {
  const what = name === 'suggestions_paused' ? '分流建议' : '语音前台分流';
  const ok = await confirmDialog(`${on ? '暂停' : '恢复'}全中心的${what}？（所有实例、所有接警员）`,
    {okText: on ? '暂停' : '恢复', danger: on});
  if (!ok) return;
  try {
    setCentre(await api('POST', '/api/controls', {[name]: on}));
    renderCentre();
  } catch (err) {
    showError(err);
  }
}

function renderHeader() {
  renderCentre();
  $('#user-name').textContent = S.user.name;
  $('#user-role').textContent = roleLabel(S.user.role);
  $('#user-seat').textContent = S.user.seat ? `席位 ${S.user.seat}` : '';
  $('#rule-version').textContent = conf.ruleVersion ? `规则 ${conf.ruleVersion}` : '';
}

function showConnection(connected) {
  const node = $('#conn');
  node.textContent = connected ? '已连接' : '重连中…';
  node.classList.toggle('ok', connected);
  node.classList.toggle('bad', !connected);
}

// ---------------------------------------------------------------------------------------------
// Live calls: snapshot, events
// ---------------------------------------------------------------------------------------------

/** A live call as the console keeps it, from a Call of GET /api/calls (or a call_started event). */
function makeCall(raw) {
  const c = {
    id: String(raw.call_id), remote: '', worker: '', slot: '', seat: '', instance: '', since: 0, state: 'ringing',
    degraded: false, decision: null, transfer: null, repeat: null, ivr: null, steps: [], snapshotId: 0,
    ended: false, endedAt: 0, endInfo: '', removeTimer: null, busy: new Set(), log: [], li: null,
  };
  updateFromSnapshot(c, raw);
  return c;
}

function updateFromSnapshot(c, raw) {
  c.remote = String(raw.remote ?? c.remote ?? '');
  c.worker = String(raw.worker ?? c.worker ?? '');
  c.slot = raw.slot ?? c.slot;
  c.seat = String(raw.seat ?? c.seat ?? '');
  c.instance = String(raw.instance ?? c.instance ?? ''); // the server instance that holds the call
  c.since = Number(raw.since) || c.since || nowServer();
  c.state = String(raw.state || c.state || 'talking');
  c.degraded = Boolean(raw.degraded);
  if (raw.decision !== undefined) c.decision = raw.decision;
  if (raw.repeat) foldRepeat(c, 'snapshot', raw.repeat);
  if (raw.ivr) foldIvr(c, 'snapshot', raw.ivr);
  c.snapshotId = Number(raw.last_event_id) || 0;
  if (raw.transfer && typeof raw.transfer === 'object') {
    const step = String(raw.transfer.step || '');
    const changed = !c.transfer || c.transfer.step !== step || c.transfer.target !== raw.transfer.target;
    c.transfer = {target: String(raw.transfer.target || ''), mode: String(raw.transfer.mode || ''), step,
      status: 0, reason: String(raw.transfer.reason || '')};
    if (changed) addStep(c, step, raw.transfer);
  }
  if (c.ended && c.state !== 'ended') {
    c.ended = false; // it was still live after all
    clearTimeout(c.removeTimer);
  }
}

const nowServer = () => Date.now() / 1000 + S.clockOffset;

/** GET /api/calls (at start and when the stream could not resume); events wait meanwhile. */
async function reloadCalls() {
  if (S.reloading) {
    S.reloadAgain = true; // this snapshot may predate the hello: take another after it
    return;
  }
  S.reloading = true;
  try {
    do {
      S.reloadAgain = false;
      let data;
      try {
        data = await api('GET', '/api/calls');
      } catch (err) {
        if (err.status !== 401) showError(err);
        break;
      }
      if (!S.user) break;
      const before = S.sel;
      if (data.controls) setCentre(data.controls);
      mergeSnapshot(Array.isArray(data.calls) ? data.calls : []);
      // the selected call's transcript, again (a call selected just now is loading already)
      if (before && S.sel === before && !before.ended) await loadDetail(before);
    } while (S.reloadAgain && S.user);
  } finally {
    S.reloading = null;
    const pending = S.pending;
    S.pending = [];
    pending.forEach(processEvent);
  }
}

function mergeSnapshot(rawCalls) {
  const seen = new Set();
  for (const raw of rawCalls) {
    if (!raw || raw.call_id === undefined) continue;
    const id = String(raw.call_id);
    seen.add(id);
    const c = S.calls.get(id);
    if (c) updateFromSnapshot(c, raw);
    else S.calls.set(id, makeCall(raw));
    renderCallItem(S.calls.get(id));
  }
  // live calls the server no longer lists ended while we were not listening
  for (const c of S.calls.values()) if (!seen.has(c.id) && !c.ended) endCall(c, {});
  renderCallsEmpty();
  ensureSelection();
  if (S.sel) renderSelection();
}

function handleEvent(ev) {
  if (S.reloading) {
    S.pending.push(ev); // applied once the snapshot is in
    return;
  }
  processEvent(ev);
}

function processEvent(ev) {
  const kind = String(ev.kind || '');
  const data = ev.data && typeof ev.data === 'object' ? ev.data : {};
  if (SUPERVISOR_KINDS.has(kind)) {
    supervisorBanner(ev, data);
    return;
  }
  if (kind === 'negative_list_reloaded') {
    negativeListReloaded(data);
    return;
  }
  if (kind === 'centre_controls') {
    setCentre(data);
    renderCentre();
    return;
  }
  if (kind === 'alert') {
    if (supervisorUser()) {
      alertEvent(data);
      if (data && data.order_no) orderChanged(String(data.order_no)); // its row in 工单 follows
    }
    return;
  }
  if (kind === 'alert_acked') {
    if (supervisorUser()) alertAckedEvent(data);
    return;
  }
  if (kind === 'callbacks_changed') {
    loadCallbacks();
    return;
  }
  if (kind === 'call_ended' && data && endedByFenliu(data.reason)) loadCallbacks(); // its caller is on the list
  if (!ev.call_id) return;
  const id = String(ev.call_id);
  let c = S.calls.get(id);
  if (!c) {
    if (kind === 'seat_answered') {
      reloadCalls(); // the ACD gave this operator's seat a call: the snapshot brings it with its state
      return;
    }
    if (kind !== 'call_started') {
      // the selected call may have left the live list: its transcript still follows
      if (S.sel && S.sel.id === id) applyToView(S.sel, ev);
      return;
    }
    c = makeCall({call_id: id, remote: data.remote, slot: data.slot, seat: data.seat, worker: ev.worker,
      instance: ev.instance, since: ev.at, state: 'ringing'});
    S.calls.set(id, c);
  }
  c.log.push(ev);
  if (c.log.length > LOG_LIMIT) c.log.splice(0, c.log.length - LOG_LIMIT);
  if (Number(ev.id) > c.snapshotId) applyToCall(c, ev, kind, data);
  if (S.sel === c) applyToView(c, ev);
  renderCallItem(c);
  renderCallsEmpty();
  if (kind === 'call_started') ensureSelection();
  if (S.sel === c) renderSelection();
}

/** Fold one event into the call's state (list item, card, keys, progress). */
function applyToCall(c, ev, kind, data) {
  switch (kind) {
    case 'call_started':
      if (data.remote !== undefined) c.remote = String(data.remote);
      break;
    case 'call_answered':
      if (c.state === 'ringing') c.state = 'talking';
      break;
    case 'call_ended':
      endCall(c, data, ev.at);
      break;
    case 'decision':
      // the card follows what the caller says (decisions on other legs are kept in history)
      if (!ev.leg || ev.leg === 'caller') c.decision = data;
      break;
    case 'call_degraded':
      c.degraded = true;
      break;
    case 'repeat_caller':
    case 'repeat_same_matter':
      foldRepeat(c, kind, data);
      break;
    case 'ivr_step': // the IVR front desk (语音前台), see ivr.js
    case 'overflowed':
    case 'queue_dialing':
    case 'queue_answered':
    case 'queue_failed':
      foldIvr(c, kind, data);
      break;
    case 'media_timeout':
      if (S.sel === c) showMessage(`媒体超时：${Math.round(Number(data.seconds) || 0)} 秒没有收到语音${data.why ? `（${data.why}）` : ''}`, 'warn');
      break;
    case 'leg_held': // the caller's PBX put the call on hold: silence is expected, nothing is ended
      if (S.sel === c) showMessage(data.held ? '报警人一侧已保持通话（静音属正常，系统不会挂断）' : '报警人一侧已恢复通话', 'info');
      break;
    case 'media_probe': // no voice for a while: the caller's phone was asked whether it is still there
      if (S.sel === c && data.alive) showMessage(`报警人 ${Math.round(Number(data.silent_s) || 0)} 秒无声，话机仍在线，通话保持`, 'info');
      break;
    case 'operator_action':
      if (S.sel === c && data.by !== S.user.name) {
        showMessage(`${data.by || '其他终端'}：${data.action || ''} ${data.target ? targetText(data.target) : ''}`, 'info');
      }
      break;
    case 'leg_dialing':
    case 'leg_answered':
    case 'leg_ended':
      legEvent(c, kind, ev.leg || data.leg, data);
      break;
    default:
      if (kind.startsWith('transfer_')) transferEvent(c, kind.slice('transfer_'.length), data);
  }
}

/** transfer_started / _progress / _consulted / _bridged / _completed / _failed. */
function transferEvent(c, step, data) {
  const prev = c.transfer || {};
  const target = String(data.target_id || prev.target || data.target || '');
  if (step === 'started') c.steps = [];
  c.transfer = {target, mode: String(data.mode || prev.mode || ''), step, status: Number(data.status) || 0,
    reason: String(data.reason || ''), bridged: prev.bridged || step === 'bridged'};
  const states = {started: 'transferring', progress: 'transferring', consulted: 'consulted', bridged: 'three-way',
    completed: 'handed-over', failed: 'talking'};
  if (states[step] && !c.ended) c.state = states[step];
  addStep(c, step, c.transfer);
}

/** The hotline leg being dialled / answering / hanging up, shown with the transfer's progress. */
function legEvent(c, kind, leg, data) {
  if (leg && leg !== 'hotline') return;
  if (kind === 'leg_dialing' && c.transfer && ACTIVE.has(c.transfer.step)) {
    c.transfer.step = c.transfer.step === 'requested' || c.transfer.step === 'started' ? 'dialing' : c.transfer.step;
    addStep(c, 'dialing', c.transfer);
  } else if (kind === 'leg_answered' && c.transfer && DIALLING.has(c.transfer.step)) {
    c.transfer.step = 'answered';
    addStep(c, 'answered', c.transfer);
  } else if (kind === 'leg_ended' && c.transfer && ACTIVE.has(c.transfer.step) && c.transfer.step !== 'requested') {
    const why = [data.reason, data.status ? `(${data.status})` : ''].filter(Boolean).join(' ');
    c.steps.push({text: `热线已挂断${why ? `：${why}` : ''}`, cls: 'muted', at: nowServer()});
  }
}

function endCall(c, data, at) {
  if (c.ended) return;
  c.ended = true;
  c.state = 'ended';
  c.endedAt = Number(at) || nowServer();
  c.endInfo = [data.reason, data.status ? `(${data.status})` : ''].filter(Boolean).join(' ');
  if (c.transfer && DIALLING.has(c.transfer.step)) c.transfer.step = 'ended';
  clearTimeout(c.removeTimer);
  c.removeTimer = setTimeout(() => removeCall(c), ENDED_LINGER_MS);
}

function removeCall(c) {
  if (S.calls.get(c.id) !== c) return;
  S.calls.delete(c.id);
  if (c.li) c.li.remove();
  c.li = null;
  renderCallsEmpty();
  ensureSelection();
}

/** Select the newest live call when nothing (or a call that has ended) is selected. */
function ensureSelection() {
  if (S.sel && !S.sel.ended) return;
  const live = [...S.calls.values()].filter((c) => !c.ended).sort((a, b) => b.since - a.since);
  if (live.length) select(live[0].id);
}

// ---------------------------------------------------------------------------------------------
// The calls list
// ---------------------------------------------------------------------------------------------

function renderCallItem(c) {
  const list = $('#calls');
  if (!c.li) {
    c.li = el('li', {
      tabindex: '0', role: 'option', dataset: {callId: c.id},
      onclick: () => select(c.id),
      onkeydown: (e) => callKey(e, c),
    });
    list.append(c.li); // placed below, once its state is known
  }
  const d = c.decision;
  const danger = vetoesOf(d).length > 0;
  const li = c.li;
  li.className = 'call';
  li.classList.toggle('selected', S.sel === c);
  li.classList.toggle('ended', c.ended);
  li.classList.toggle('danger', danger);
  li.classList.toggle('urgent', Boolean(d && d.urgent));
  li.classList.toggle('ivr-urgent', ivrUrgent(c));
  li.setAttribute('aria-selected', String(S.sel === c));
  const badges = [];
  const ivr = ivrBadge(c);
  if (ivr) badges.push(ivr);
  if (danger) {
    const label = isFraud(d) ? '反诈' : `危险：${vetoGroups(d).map(dangerLabel).join('、')}`;
    badges.push(el('span', {class: 'badge danger'}, label));
  } else if (suggestedTarget(d)) {
    badges.push(el('span', {class: 'badge target', dataset: {target: d.target}}, `→ ${targetShort(d.target)}`));
  } else if (d && Array.isArray(d.alternatives) && d.alternatives.length) {
    badges.push(el('span', {class: 'badge alt'}, '待选去向'));
  }
  if (c.degraded) badges.push(el('span', {class: 'badge degraded'}, '无实时建议'));
  const repeat = repeatBadge(c);
  if (repeat) badges.push(repeat);
  const transfer = transferSummary(c.transfer, MODE_LABELS);
  li.title = c.remote;
  replaceChildren(li,
    el('div', {class: 'row'}, el('span', {class: 'remote'}, displayNumber(c.remote) || '未知号码'),
      el('span', {class: 'dur'}, duration(c))),
    el('div', {class: 'row small'},
      el('span', {class: `state state-${c.state}`}, stateLabel(c.state)),
      el('span', {class: 'worker'}, [c.worker, c.slot !== '' && c.slot !== undefined ? `#${c.slot}` : ''].join(''))),
    ivrRowLine(c),
    transfer ? el('div', {class: 'transfer-line small'}, transfer) : null,
    badges.length ? el('div', {class: 'badges'}, badges) : null);
  placeCallItem(c);
}

/** Calls the IVR front desk marked urgent come first, then the newest first. */
const goesBefore = (a, b) => (ivrUrgent(a) !== ivrUrgent(b) ? ivrUrgent(a) : a.since > b.since);

/** Move the call's item to its place in the list (only when it is not there: focus stays). */
function placeCallItem(c) {
  const list = $('#calls');
  const next = [...list.children].find((li) => {
    if (li === c.li) return false;
    const o = S.calls.get(li.dataset.callId);
    return !o || goesBefore(c, o);
  }) || null;
  if (c.li.nextElementSibling !== next) list.insertBefore(c.li, next);
}

function renderCallsEmpty() {
  $('#calls-empty').hidden = S.calls.size > 0;
}

function duration(c) {
  const end = c.ended ? c.endedAt : nowServer();
  return clock(end - c.since);
}

/** Arrow keys move between calls; Enter / Space select. */
function callKey(e, c) {
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    select(c.id);
  } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
    e.preventDefault();
    const next = e.key === 'ArrowDown' ? c.li.nextElementSibling : c.li.previousElementSibling;
    if (next) next.focus();
  }
}

function tick() {
  for (const c of S.calls.values()) {
    if (c.li) {
      const dur = c.li.querySelector('.dur');
      if (dur) dur.textContent = duration(c);
    }
  }
  if (S.sel) $('#call-dur').textContent = duration(S.sel);
}

// ---------------------------------------------------------------------------------------------
// Selection and the live transcript
// ---------------------------------------------------------------------------------------------

function select(id) {
  const c = S.calls.get(id);
  if (!c) return;
  if (S.sel === c && S.view && S.view.callId === id) return;
  const prev = S.sel;
  S.sel = c;
  if (prev && prev.li) renderCallItem(prev);
  renderCallItem(c);
  S.view = {callId: id, loaded: false, applied: 0, lines: new Map(), key: ''};
  S.stickBottom = true;
  replaceChildren($('#transcript'), el('p', {class: 'muted'}, '加载中…'));
  $('#jump-new').hidden = true;
  renderSelection();
  loadDetail(c);
}

/** GET /api/calls/{id}: the utterances so far; then the logged events after its snapshot. */
async function loadDetail(c) {
  const view = S.view;
  if (!view || view.callId !== c.id) return;
  let data = null;
  try {
    data = await api('GET', callPath(c.id));
  } catch (err) {
    if (err.status === 401) return;
    if (S.view === view && err.status !== 404) showError(err);
  }
  if (S.view !== view) return; // another call was selected meanwhile
  view.loaded = true;
  view.lines = new Map();
  view.key = '';
  const box = clear($('#transcript'));
  const call = (data && data.call) || {};
  view.applied = Number(call.last_event_id) || 0;
  const decisions = (data && Array.isArray(data.decisions) ? data.decisions : [])
    .filter((d) => d && (!d.leg || d.leg === 'caller'));
  if (!c.decision && decisions.length) {
    c.decision = decisions[decisions.length - 1];
    renderCallItem(c);
  }
  const needles = needlesOf(c.decision);
  for (const u of (data && Array.isArray(data.utterances) ? data.utterances : [])) {
    upsertLine(view, box, {...u, final: true}, needles);
  }
  view.key = JSON.stringify(needles);
  // events of this call newer than the snapshot (skipping any already in it)
  for (const ev of c.log) applyToView(c, ev);
  renderTranscriptEmpty();
  scrollTranscript(true);
  renderSelection();
}

/** Apply one event to the selected call's transcript (once; none at or below the snapshot). */
function applyToView(c, ev) {
  const view = S.view;
  if (!view || view.callId !== c.id || !view.loaded) return;
  const id = Number(ev.id) || 0;
  if (id <= view.applied) return;
  view.applied = id;
  const data = ev.data || {};
  if (ev.kind === 'partial_transcript' || ev.kind === 'final_transcript') {
    const final = ev.kind === 'final_transcript';
    if (!final && !String(data.text || '').trim()) return;
    upsertLine(view, $('#transcript'), {leg: ev.leg, utterance_id: data.utterance_id, text: data.text, at: ev.at, final,
      source: data.source},
      needlesOf(c.decision));
    renderTranscriptEmpty();
    scrollTranscript(false);
  } else if (ev.kind === 'decision') {
    refreshHighlights(c);
  }
}

/** Add a transcript line, or replace in place the line of the same leg and utterance. */
function upsertLine(view, box, u, needles) {
  const key = `${u.leg}/${u.utterance_id}`;
  const line = utteranceEl(u, needles, {partial: !u.final});
  const old = view.lines.get(key);
  if (old && old.el.isConnected) {
    // a final after its partial, or a repeated partial: same place, new text
    old.el.className = line.className;
    replaceChildren(old.el, ...line.childNodes);
    old.text = String(u.text ?? '');
    old.final = Boolean(u.final);
  } else {
    box.append(line);
    view.lines.set(key, {el: line, text: String(u.text ?? ''), final: Boolean(u.final)});
  }
}

/** Re-mark the decision's words in every line, when the words changed. */
function refreshHighlights(c) {
  const view = S.view;
  const needles = needlesOf(c.decision);
  const key = JSON.stringify(needles);
  if (!view || view.key === key) return;
  view.key = key;
  for (const line of view.lines.values()) {
    const text = line.el.querySelector('.text');
    if (text) replaceChildren(text, highlight(line.text, needles));
  }
}

function renderTranscriptEmpty() {
  const box = $('#transcript');
  const empty = box.querySelector('.empty-note');
  const hasLines = box.querySelector('.utt');
  if (hasLines && empty) empty.remove();
  if (!hasLines && !empty) box.append(el('p', {class: 'muted empty-note'}, '暂无识别文本'));
}

/** Follow new lines, unless the operator scrolled up (then offer "↓ 新内容"). */
function scrollTranscript(force) {
  const box = $('#transcript');
  if (force || S.stickBottom) {
    box.scrollTop = box.scrollHeight;
    S.stickBottom = true;
    $('#jump-new').hidden = true;
  } else {
    $('#jump-new').hidden = false;
  }
}

function onTranscriptScroll() {
  const box = $('#transcript');
  S.stickBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 24;
  if (S.stickBottom) $('#jump-new').hidden = true;
}

// ---------------------------------------------------------------------------------------------
// The selected call: header, card, keys, progress
// ---------------------------------------------------------------------------------------------

function renderSelection() {
  renderCallHead();
  renderRepeatBanner($('#repeat-banner'), S.sel);
  renderIvrBanner($('#ivr-banner'), S.sel);
  renderCard();
  renderProgress();
  renderKeys();
}

function renderCallHead() {
  const c = S.sel;
  $('#call-remote').textContent = c ? (displayNumber(c.remote) || '未知号码') : '未选择来电';
  $('#call-remote').title = c ? c.remote : '';
  $('#call-state').textContent = c ? stateLabel(c.state) + (c.ended && c.endInfo ? `（${c.endInfo}）` : '') : '';
  $('#call-state').className = c ? `state state-${c.state}` : 'state';
  $('#call-dur').textContent = c ? duration(c) : '';
  $('#call-worker').textContent = c && c.worker
    ? `${c.instance ? `实例 ${c.instance} · ` : ''}${c.worker}${c.seat ? ` · 席位 ${c.seat}` : ''}` : '';
}

/** Rebuild the card's content only when the evidence changed; the confidence updates in place. */
function renderCard() {
  const card = $('#card');
  const c = S.sel;
  const key = evidenceKey(c);
  if (key === S.cardKey) {
    if (S.cardConf && c && c.decision && typeof c.decision.confidence === 'number') {
      const text = `置信度 ${Math.round(c.decision.confidence * 100)}%`;
      if (S.cardConf.textContent !== text) S.cardConf.textContent = text;
    }
    return;
  }
  S.cardKey = key;
  const built = buildCard(c, {bringIn: (t) => bringIn(t), pickAlternative: (t) => pickAlternative(t)});
  S.cardConf = built.conf;
  card.className = ['card', ...built.classes].join(' ');
  card.dataset.target = built.target;
  replaceChildren($('#card-body'), built.nodes);
  resetTargetPicker();
}

/** The picker shows the suggestion, until the operator picks something else for this evidence. */
function resetTargetPicker() {
  const c = S.sel;
  const select = $('#target-select');
  if (S.pick.callId === (c && c.id) && S.pick.key === S.cardKey) return;
  S.pick = {callId: null, key: null};
  select.value = c ? suggestedTarget(c.decision) : '';
  if (select.selectedIndex < 0) select.value = '';
  renderKeys();
}

function renderModeAndTargets() {
  const mode = $('#mode');
  replaceChildren(mode, conf.modes.map((m) => el('option', {value: m}, MODE_LABELS[m] || m)));
  mode.value = conf.defaultMode;
  const select = $('#target-select');
  replaceChildren(select,
    el('option', {value: ''}, '— 选择去向 —'),
    conf.targets.filter((t) => t.id !== 'police').map((t) => el('option', {value: t.id},
      `${targetText(t.id)}${t.urgent ? '（紧急）' : ''}`)));
}

function renderUrgentLane() {
  const lane = $('#urgent-buttons');
  replaceChildren(lane, urgentTargets().map((t) => el('button', {
    type: 'button', class: 'btn urgent-btn', dataset: {target: t.id},
    title: `三方通话：接入 ${t.name || t.id}`, onclick: () => bringIn(t.id),
  }, el('span', {class: 'num'}, t.number || t.id), el('span', {class: 'name'}, targetName(t.id)))));
  $('#urgent').hidden = urgentTargets().length === 0;
}

const transferActive = (c) => Boolean(c && c.transfer && ACTIVE.has(c.transfer.step));
const canAct = (c) => Boolean(c && !c.ended);

/** Enable / label / show the keys for the selected call. */
function renderKeys() {
  const c = S.sel;
  const select = $('#target-select');
  const chosen = select.value;
  const btn = $('#btn-transfer');
  replaceChildren(btn, el('span', {class: 'key-main'}, `一键转接 ${chosen ? targetShort(chosen) : ''}`.trim()),
    el('span', {class: 'key-hint'}, ' (F8)'));
  btn.disabled = !canAct(c) || c.busy.has('transfer') || transferActive(c) || c.state === 'handed-over' || !chosen;
  btn.classList.toggle('unsuggested', Boolean(c && chosen && !suggestedTargets(c.decision).has(chosen)));
  select.disabled = !canAct(c);
  $('#mode').disabled = !canAct(c);
  const dialling = canAct(c) && c.transfer && DIALLING.has(c.transfer.step);
  $('#btn-cancel').hidden = !dialling;
  $('#btn-cancel').disabled = !dialling || c.busy.has('cancel');
  const threeWay = canAct(c) && (c.state === 'three-way' || (c.transfer && c.transfer.step === 'bridged'));
  $('#btn-release').hidden = !threeWay;
  $('#btn-release').disabled = !threeWay || c.busy.has('release');
  $('#btn-hangup').disabled = !canAct(c) || c.busy.has('hangup');
  for (const b of $$('#urgent-buttons button, #card-body .link-btn, #card-body .alt-btn')) {
    b.disabled = !canAct(c) || c.busy.has('transfer');
  }
}

/** One line of progress per transfer step (what the operator reads while the hotline rings). */
function addStep(c, step, t) {
  const label = targetShort(t.target_id || t.target || (c.transfer && c.transfer.target) || '');
  const threeWay = (t.mode || (c.transfer && c.transfer.mode)) === 'three-way';
  const texts = {
    requested: [`已请求转接 ${label}…`, ''],
    started: [`正在呼叫 ${label}…`, 'busy'],
    dialing: [`正在呼叫 ${label}…`, 'busy'],
    progress: [`振铃中（${label}）…`, 'busy'],
    answered: [`${label} 已接听`, 'busy'],
    consulted: [`已咨询 ${label}`, 'ok'],
    bridged: [`三方通话中（来电人、接警员、${label}）`, 'ok'],
    completed: [threeWay || (c.transfer && c.transfer.bridged) ? '接警员已退出，完成' : `完成：已转至 ${label}`, 'done'],
    failed: isCancelled(t) ? ['已取消转接，来电人仍与接警员通话', 'cancelled']
      : [`转接未成功：${failureText(t)}，来电人仍在线`, 'failed'],
  };
  const [text, cls] = texts[step] || [String(step), ''];
  const last = c.steps[c.steps.length - 1];
  if (last && last.text === text) return; // e.g. transfer_started then leg_dialing
  c.steps.push({text, cls, step, at: nowServer()});
}

function renderProgress() {
  const box = $('#transfer-progress');
  const c = S.sel;
  const steps = c ? c.steps : [];
  box.hidden = steps.length === 0;
  const last = steps[steps.length - 1];
  box.className = `progress ${last ? last.cls : ''}`;
  box.dataset.step = last && last.step ? last.step : '';
  replaceChildren(box,
    el('div', {class: 'progress-now', role: 'status'}, last ? last.text : ''),
    el('ol', {class: 'progress-steps'}, steps.map((s) => el('li', {class: s.cls},
      el('span', {class: 'time'}, timeOfDay(s.at)), s.text))));
}

// ---------------------------------------------------------------------------------------------
// Actions: the one key, alternatives, urgent lane, cancel, release, hang up
// ---------------------------------------------------------------------------------------------

/** F8 / Ctrl+Enter / the button: transfer to the picked target (asks first if not suggested). */
async function oneKey() {
  const c = S.sel;
  const btn = $('#btn-transfer');
  if (!c || btn.disabled) return;
  const target = $('#target-select').value;
  if (!target) return;
  const mode = $('#mode').value || conf.defaultMode;
  if (!suggestedTargets(c.decision).has(target)) {
    const danger = vetoesOf(c.decision).map(chipText);
    const note = danger.length ? `检测到危险信号（${[...new Set(danger)].join('、')}），路由建议不可分流。` : '路由没有建议这个去向。';
    const ok = await confirmDialog(`${note}\n确认转接到 ${targetText(target)}（${MODE_LABELS[mode] || mode}）？`,
      {okText: '确认转接', focus: danger.length ? 'cancel' : 'ok', danger: danger.length > 0});
    if (!ok || S.sel !== c) return;
  }
  await transfer(c, target, mode);
}

/** An alternative of a tie: suggested by the router, transferred with one key. */
function pickAlternative(target) {
  const c = S.sel;
  if (!canAct(c) || !target) return;
  transfer(c, target, $('#mode').value || conf.defaultMode);
}

/** Bring an urgent service into the call (three-way, no confirmation). */
function bringIn(target) {
  const c = S.sel;
  if (!canAct(c)) {
    showMessage('请先选择一个通话中的来电', 'warn');
    return;
  }
  transfer(c, target, 'three-way');
}

async function transfer(c, target, mode) {
  if (c.busy.has('transfer')) return;
  hideMessage();
  await request(c, 'transfer', callPath(c.id, '/transfer'), {target, mode}, () => {
    // 202: the events tell the rest
    if (!c.transfer || !ACTIVE.has(c.transfer.step) || c.transfer.step === 'requested') {
      const requested = {target, mode, step: 'requested', status: 0, reason: ''};
      c.transfer = requested;
      c.steps = [];
      addStep(c, 'requested', requested);
      setTimeout(() => requestUnanswered(c, requested), REQUEST_STALE_MS);
    }
  });
}

/** No transfer event came after the 202: give the key back rather than leave it locked. */
function requestUnanswered(c, requested) {
  if (c.transfer !== requested || requested.step !== 'requested') return;
  requested.step = 'unknown';
  c.steps.push({text: '未收到转接进度，请核实通话状态', cls: 'failed', step: 'unknown', at: nowServer()});
  if (S.sel === c) renderSelection();
}

function cancelTransfer() {
  const c = S.sel;
  if (!c || $('#btn-cancel').hidden || $('#btn-cancel').disabled) return;
  request(c, 'cancel', callPath(c.id, '/cancel-transfer'), {});
}

/**
 * Leave the three-way call (the button, or F9). F9 also asks after a three-way transfer that the
 * server already reported handed over (with no operator leg — answer mode — it hands over as it
 * bridges): the server has the last word on whether there is anything to leave.
 */
function releaseOperator({fromKey = false} = {}) {
  const c = S.sel;
  if (!canAct(c) || c.busy.has('release')) return;
  const threeWay = !$('#btn-release').hidden;
  const handedOver = c.transfer && c.transfer.mode === 'three-way' && c.transfer.bridged;
  if (!threeWay && !(fromKey && handedOver)) return;
  request(c, 'release', callPath(c.id, '/release-operator'), {});
}

async function hangup() {
  const c = S.sel;
  if (!canAct(c) || $('#btn-hangup').disabled) return;
  const ok = await confirmDialog(`确认挂断来电 ${displayNumber(c.remote)}？`, {okText: '挂断', focus: 'cancel', danger: true});
  if (ok) request(c, 'hangup', callPath(c.id, '/hangup'), {});
}

/** POST with the key disabled meanwhile; API errors go to #message. */
async function request(c, what, path, body, onOk) {
  c.busy.add(what);
  renderKeys();
  try {
    await api('POST', path, body);
    if (onOk) onOk();
  } catch (err) {
    if (err.status !== 401) showError(err);
  } finally {
    c.busy.delete(what);
    if (S.sel === c) renderSelection();
  }
}

// ---------------------------------------------------------------------------------------------
// Messages, confirm dialog, banner
// ---------------------------------------------------------------------------------------------

let messageTimer = null;

function showMessage(text, kind = 'error') {
  const box = $('#message');
  $('#message-text').textContent = text;
  box.className = `message ${kind}`;
  box.hidden = false;
  clearTimeout(messageTimer);
  if (kind === 'info') messageTimer = setTimeout(hideMessage, 8000);
}

function showError(err) {
  const text = err instanceof Error ? err.message : String(err);
  const code = err && err.status ? `（${err.status}）` : '';
  showMessage(`${text}${code}`, 'error');
}

function hideMessage() {
  clearTimeout(messageTimer);
  $('#message').hidden = true;
}

/**
 * An in-page confirmation: resolves true (确认) or false (取消 / Esc). Focus stays inside it
 * and returns where it was.
 */
function confirmDialog(text, {okText = '确认', cancelText = '取消', focus = 'ok', danger = false} = {}) {
  closeDialog(false);
  const box = $('#confirm');
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okText;
  $('#confirm-cancel').textContent = cancelText;
  box.classList.toggle('danger', danger);
  box.hidden = false;
  return new Promise((resolve) => {
    S.dialog = {resolve, back: document.activeElement};
    (focus === 'cancel' ? $('#confirm-cancel') : $('#confirm-ok')).focus();
  });
}

function closeDialog(answer) {
  const dialog = S.dialog;
  if (!dialog) return;
  S.dialog = null;
  $('#confirm').hidden = true;
  if (dialog.back && dialog.back.isConnected && typeof dialog.back.focus === 'function') dialog.back.focus();
  dialog.resolve(answer);
}

function dialogKey(e) {
  if (e.key === 'Escape') {
    e.preventDefault();
    closeDialog(false);
  } else if (e.key === 'Tab') {
    // keep the focus on the two buttons
    e.preventDefault();
    const ok = $('#confirm-ok');
    (document.activeElement === ok ? $('#confirm-cancel') : ok).focus();
  }
}

function supervisorBanner(ev, data) {
  const labels = {worker_lost: '工作进程失联', restart_failed: '工作进程重启失败', front_event: '前置 IVR 事件',
    worker_restarted: '工作进程已重启', orphans_released: '已释放遗留通话', call_rejected: '已拒接来电'};
  const detail = Object.entries(data)
    .filter(([, v]) => ['string', 'number', 'boolean'].includes(typeof v) && v !== '')
    .map(([k, v]) => `${k}=${v}`).join(' ').slice(0, 160);
  const item = el('li', {class: ev.kind === 'worker_restarted' ? 'info' : 'bad'},
    el('span', {class: 'time'}, timeOfDay(ev.at)),
    el('strong', {}, labels[ev.kind] || ev.kind),
    ev.worker ? ` ${ev.worker}` : '', detail ? ` — ${detail}` : '');
  const list = $('#banner-list');
  list.append(item);
  while (list.children.length > 5) list.firstElementChild.remove();
  $('#banner').hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Negative list (supervisors)
// ---------------------------------------------------------------------------------------------

async function loadNegativeList(show) {
  let data;
  try {
    data = await api('GET', '/api/negative-list');
  } catch (err) {
    if (show && err.status !== 401) $('#neglist-error').textContent = err.message;
    return;
  }
  learnDangerLabels(data.text);
  $('#neglist-version').textContent = String(data.version || '');
  $('#neglist-name').textContent = data.name ? String(data.name) : '';
  $('#neglist-name').title = data.path ? String(data.path) : '';
}

async function reloadNegativeList() {
  const btn = $('#btn-reload-list');
  const error = $('#neglist-error');
  btn.disabled = true;
  error.textContent = '';
  try {
    const data = await api('POST', '/api/negative-list/reload', {});
    $('#neglist-version').textContent = String(data.version || '');
    showMessage(`负面清单已重新加载：${data.previous || '—'} → ${data.version || '—'}`, 'info');
    loadNegativeList(true);
  } catch (err) {
    if (err.status !== 401) error.textContent = err.message; // 422: "<file>:<line>: …"
  } finally {
    btn.disabled = false;
  }
}

function negativeListReloaded(data) {
  if (data.version) $('#neglist-version').textContent = String(data.version);
  conf.ruleVersion = data.version ? String(data.version) : conf.ruleVersion;
  if (S.user) renderHeader();
}

// ---------------------------------------------------------------------------------------------
// Tabs, keyboard, wiring
// ---------------------------------------------------------------------------------------------

function showTab(tab) {
  if (!TABS[tab] || (SUPERVISOR_TABS.has(tab) && !supervisorUser())) return;
  S.tab = tab;
  for (const [name, page] of Object.entries(TABS)) {
    $(page).hidden = name !== tab;
    $(`#tab-${name}`).setAttribute('aria-selected', String(name === tab));
  }
  if (tab === 'history' && !$('#history-results tbody').children.length) historySearch(0);
  else if (tab === 'stats') showStats();
  else if (tab === 'orders') loadOrders();
  else if (tab === 'alerts') loadAlerts();
  else if (tab === 'leads') loadLeads();
}

function onKeyDown(e) {
  if (!S.user) return;
  if (S.dialog) {
    dialogKey(e);
    return;
  }
  const live = S.tab === 'live';
  if (e.key === 'F8' || (e.key === 'Enter' && (e.ctrlKey || e.metaKey))) {
    e.preventDefault();
    if (live) oneKey();
  } else if (e.key === 'F9') {
    e.preventDefault();
    if (live) releaseOperator({fromKey: true});
  } else if (e.key === 'Escape') {
    if (live && !$('#btn-cancel').hidden) {
      e.preventDefault();
      cancelTransfer();
    }
  } else if (e.altKey && /^[1-6]$/.test(e.key)) {
    e.preventDefault();
    showTab(Object.keys(TABS)[Number(e.key) - 1]);
  }
}

function wireStaticControls() {
  $('#login-form').addEventListener('submit', onLoginSubmit);
  $('#btn-pause-suggestions').addEventListener('click', () => throwSwitch('suggestions_paused', !centre.suggestionsPaused));
  $('#btn-pause-ivr').addEventListener('click', () => throwSwitch('ivr_offers_paused', !centre.ivrOffersPaused));
  $('#logout').addEventListener('click', logout);
  for (const name of Object.keys(TABS)) $(`#tab-${name}`).addEventListener('click', () => showTab(name));
  $('#btn-transfer').addEventListener('click', oneKey);
  $('#btn-cancel').addEventListener('click', cancelTransfer);
  $('#btn-release').addEventListener('click', () => releaseOperator());
  $('#btn-hangup').addEventListener('click', hangup);
  $('#target-select').addEventListener('change', () => {
    S.pick = {callId: S.sel && S.sel.id, key: S.cardKey};
    renderKeys();
  });
  $('#confirm-ok').addEventListener('click', () => closeDialog(true));
  $('#confirm-cancel').addEventListener('click', () => closeDialog(false));
  $('#message-close').addEventListener('click', hideMessage);
  $('#banner-close').addEventListener('click', () => {
    clear($('#banner-list'));
    $('#banner').hidden = true;
  });
  $('#btn-reload-list').addEventListener('click', reloadNegativeList);
  $('#transcript').addEventListener('scroll', onTranscriptScroll);
  $('#jump-new').addEventListener('click', () => scrollTranscript(true));
  document.addEventListener('keydown', onKeyDown);
  setInterval(tick, 1000);
}

boot();
