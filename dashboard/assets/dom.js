// DOM and formatting helpers. Text from the API only ever becomes text
// nodes or attribute values: nothing is parsed as HTML.

/** el('td', {class: 'x', onclick: f}, 'text', child, [children]) builds an element. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c !== undefined && c !== null && c !== false) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** Replaces the content of a panel's body (or of the element with that id). */
export function show(id, ...children) {
  const target = document.querySelector('#' + id + ' > .body') || document.getElementById(id);
  target.replaceChildren(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
}

/** A coloured label: its class is st-<value>, for the states and statuses of the API. */
export function chip(value, title) {
  const v = String(value || 'unknown');
  return el('span', { class: 'chip st-' + v.toLowerCase().replace(/[^a-z-]/g, ''), title }, v);
}

/** A paragraph that says there is nothing (or what went wrong). */
export const empty = (text) => el('p', { class: 'empty' }, text);
export const failed = (text) => el('p', { class: 'error' }, text);

/** A table with a header row; rows are arrays of cells (nodes, text or el('td')). */
export function table(head, rows, cls = '') {
  const cell = (c) => (c instanceof Node && c.nodeName === 'TD' ? c : el('td', {}, c));
  return el('div', { class: 'scroll' },
    el('table', { class: cls },
      el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows.map((r) => (r instanceof Node ? r : el('tr', {}, r.map(cell)))))));
}

/** A time from the API as a Date, or null when absent or zero (Go's 0001-01-01). */
export function when(s) {
  if (!s) return null;
  const d = new Date(s);
  return isNaN(d) || d.getFullYear() < 2000 ? null : d;
}

const pad = (n) => String(n).padStart(2, '0');

/** HH:MM:SS today, else YYYY-MM-DD HH:MM, local time. */
export function clock(s) {
  const d = when(s);
  if (!d) return '—';
  const hms = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  if (d.toDateString() === new Date().toDateString()) return hms;
  return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + hms.slice(0, 5);
}

/** A duration in milliseconds, readable: 161 ms, 12.3 s, 3m 05s, 1h 02m. */
export function duration(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return '—';
  if (ms < 1000) return Math.max(0, Math.round(ms)) + ' ms';
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + pad(Math.floor(s % 60)) + 's';
  return Math.floor(s / 3600) + 'h ' + pad(Math.floor((s % 3600) / 60)) + 'm';
}

/** The time between two API times; to absent: until now. */
export function between(from, to) {
  const a = when(from);
  if (!a) return null;
  return (when(to) || new Date()) - a;
}

/** Seconds with a sensible precision, or — when unknown. */
export function seconds(v) {
  if (v === null || v === undefined || isNaN(v)) return '—';
  return (v < 10 ? Number(v).toFixed(2) : Number(v).toFixed(0)) + ' s';
}

/** Bytes as B, KiB, MiB, GiB. */
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}
