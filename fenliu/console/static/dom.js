// DOM helpers. Every string that comes from the server (transcripts, numbers, reasons, error
// messages…) is untrusted: it only ever reaches the page through textContent / text nodes,
// never through innerHTML or friends.

/**
 * Create an element.
 *   el('button', {class: 'big', type: 'button', dataset: {target: '119'}, onclick: fn}, 'text', child)
 * Attributes: `class`, `text` (textContent), `dataset`, `on<event>` (listener), `hidden`,
 * `disabled`; anything else goes through setAttribute. Children: strings become text nodes,
 * null/undefined/false are skipped, arrays are flattened.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'hidden' || key === 'disabled') node[key] = Boolean(value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

/** Append children (strings as text nodes). */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Remove every child of a node. */
export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

/** Replace the children of a node. */
export function replaceChildren(node, ...children) {
  clear(node);
  return append(node, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/**
 * Text with highlighted words, as a DocumentFragment of text nodes and <mark> elements.
 * `needles` = [{text, cls}]; every occurrence of every needle is marked. Overlaps are
 * resolved by position, then danger before other marks, then the longer needle.
 */
export function highlight(text, needles) {
  text = String(text ?? '');
  const ranges = [];
  for (const [rank, needle] of needles.entries()) {
    const word = String(needle.text || '');
    if (!word) continue;
    for (let at = text.indexOf(word); at !== -1; at = text.indexOf(word, at + word.length)) {
      ranges.push({start: at, end: at + word.length, cls: needle.cls, rank: needle.danger ? -1 : rank});
    }
  }
  ranges.sort((a, b) => a.start - b.start || a.rank - b.rank || (b.end - b.start) - (a.end - a.start));
  const frag = document.createDocumentFragment();
  let pos = 0;
  for (const r of ranges) {
    if (r.start < pos) continue; // overlaps a range already marked
    if (r.start > pos) frag.append(document.createTextNode(text.slice(pos, r.start)));
    const mark = document.createElement('mark');
    mark.className = r.cls;
    mark.textContent = text.slice(r.start, r.end);
    frag.append(mark);
    pos = r.end;
  }
  if (pos < text.length) frag.append(document.createTextNode(text.slice(pos)));
  return frag;
}

/** "mm:ss" (or "h:mm:ss") for a number of seconds. */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60)).padStart(2, '0');
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

// Every page shows times in one zone: the centre's (store.timezone, from GET /api/config) — the
// zone its statistics count days in — whatever the browser's own zone is.
let zoneFormat = null;

/** Show every time in this IANA zone ("Asia/Shanghai"); an unknown zone leaves the browser's. */
export function setTimeZone(zone) {
  try {
    zoneFormat = zone ? new Intl.DateTimeFormat('en-GB', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit'}) : null;
  } catch (err) {
    zoneFormat = null;
  }
}

function wallClock(d) {
  if (!zoneFormat) {
    return {year: d.getFullYear(), month: d.getMonth() + 1, day: d.getDate(),
      hour: d.getHours(), minute: d.getMinutes(), second: d.getSeconds()};
  }
  const o = {};
  for (const part of zoneFormat.formatToParts(d)) o[part.type] = Number(part.value);
  return o;
}

/** Date and time in the centre's zone ("2025-11-29 13:05:09") of a unix time in seconds. */
export function dateTime(unix) {
  if (!unix) return '';
  const w = wallClock(new Date(unix * 1000));
  const p = (n) => String(n).padStart(2, '0');
  return `${w.year}-${p(w.month)}-${p(w.day)} ${p(w.hour % 24)}:${p(w.minute)}:${p(w.second)}`;
}

/** Time of day in the centre's zone ("13:05:09") of a unix time in seconds. */
export function timeOfDay(unix) {
  return unix ? dateTime(unix).slice(11) : '';
}

/** A local calendar date "2025-11-29" (what <input type=date> holds) of a Date. */
export function isoDate(d) {
  const w = wallClock(d);
  const p = (n) => String(n).padStart(2, '0');
  return `${w.year}-${p(w.month)}-${p(w.day)}`;
}
