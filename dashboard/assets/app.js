// The dashboard: loads the status, runs, lag history and drills, then
// follows the event stream and redraws each panel from what changed. No
// reload, no framework: each render function rebuilds one panel.

import { call, blob, follow, token, ApiError } from './api.js';
import { lineChart, barChart } from './charts.js';
import { el, show, chip, empty, failed, table, when, clock, duration, between, seconds, bytes } from './dom.js';

const LAG_MINUTES = 15;
const TERMINAL = ['succeeded', 'failed', 'rolled-back'];

const state = {
  status: null,
  runs: null,
  lag: null, // {rpo_seconds, series: [{service, standby, points: [{t: Date, v}]}]}
  drills: null,
  events: [], // newest first, since the page loaded
  epochEvent: null,
  stop: null, // stops the event stream
  timers: [], // intervals and timeouts, cleared by stopAll
};

// ---- loading -------------------------------------------------------------

/** Loads everything, then follows the stream; a 401 asks for a token first, another failure tries again in 5 s. */
async function start() {
  stopAll();
  try {
    renderStatus(await call('/status'));
  } catch (e) {
    if (e.status !== 401) state.timers.push(setTimeout(start, 5000));
    return trouble(e, 'overview');
  }
  hideNotice();
  loadRuns();
  loadLag();
  loadDrills();
  state.stop = follow({
    status: renderStatus,
    event: onEvent,
    state: (text, ok) => connection(text, ok),
    fail: (e) => {
      if (e.status === 404) return poll(); // a node without the stream: poll instead
      trouble(e, 'overview');
    },
  });
  every(1000, tick);
  every(15000, loadRuns); // a safety net: the stream's run events refresh sooner
  every(30000, loadLag);
}

/** Polls the status when the node serves no event stream. */
function poll() {
  connection('polling every 2 s (this node serves no event stream)', true);
  every(2000, async () => {
    try {
      renderStatus(await call('/status'));
      loadRuns();
    } catch (e) {
      trouble(e, 'overview');
    }
  });
}

function every(ms, f) {
  state.timers.push(setInterval(f, ms));
}

function stopAll() {
  if (state.stop) state.stop();
  state.stop = null;
  state.timers.forEach((id) => clearTimeout(id)); // clears intervals too: they share one pool of ids
  state.timers = [];
}

let runsPending = null;
let runsShown = '';
/** Reloads the runs (coalesced: many step events make one request); redraws only what changed. */
function loadRuns() {
  if (runsPending) return;
  runsPending = setTimeout(async () => {
    runsPending = null;
    try {
      const runs = await call('/runs');
      const text = JSON.stringify(runs);
      if (text === runsShown) return;
      runsShown = text;
      state.runs = runs;
      renderRuns();
    } catch (e) {
      runsShown = '';
      trouble(e, 'run');
    }
  }, 150);
}

async function loadLag() {
  try {
    const lag = await call('/lag?minutes=' + LAG_MINUTES);
    state.lag = {
      rpo_seconds: lag.rpo_seconds,
      series: (lag.series || []).map((s) => ({ service: s.service, standby: s.standby, points: (s.points || []).map((p) => ({ t: new Date(p.t), v: p.lag_seconds })) })),
    };
    renderLag();
  } catch (e) {
    if (e.status !== 404 || !state.status) return trouble(e, 'lag');
    // A node without the lag history: draw what the status says from now on.
    const exp = state.status.exposure || [];
    state.lag = { rpo_seconds: exp.length ? exp[0].rpo_seconds : null, series: [] };
    addLagPoints(state.status);
    renderLag();
  }
}

async function loadDrills() {
  try {
    renderDrills(await call('/drills'));
  } catch (e) {
    trouble(e, 'drills');
  }
}

function onEvent(ev) {
  state.events.unshift(ev);
  state.events.length = Math.min(state.events.length, 50);
  renderEvents();
  if (ev.type === 'epoch') {
    state.epochEvent = ev;
    if (state.status) renderOverview(state.status);
  }
  if (ev.type === 'run' || ev.type === 'step') loadRuns();
  if (ev.type === 'drill' || ev.type === 'report') loadDrills();
}

// ---- errors, the token and the connection ---------------------------------

/** Shows an error where it belongs: 401 asks for a token, 403 names the role, the rest goes in the panel. */
function trouble(e, panel) {
  if (!(e instanceof ApiError)) e = new ApiError(0, String(e && e.message ? e.message : e));
  if (e.status === 401) {
    stopAll();
    connection('needs a token', false);
    return askToken(e.message);
  }
  if (e.status === 403) return notice('Not allowed: ' + e.message);
  if (panel === 'overview') connection('no answer', false);
  if (panel === 'overview' || !panel) return notice(e.message);
  show(panel, failed(e.message));
}

function notice(text) {
  const n = document.getElementById('notice');
  n.textContent = text;
  n.hidden = false;
}

function hideNotice() {
  document.getElementById('notice').hidden = true;
}

function connection(text, ok) {
  const c = document.getElementById('conn');
  c.textContent = text;
  c.className = 'conn ' + (ok ? 'ok' : 'bad');
}

function askToken(message) {
  const form = document.getElementById('token-form');
  document.getElementById('token-message').textContent = message || 'Enter an API token.';
  form.hidden = false;
  document.getElementById('token-input').focus();
}

function setupToken() {
  const form = document.getElementById('token-form');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = document.getElementById('token-input');
    token.set(input.value.trim());
    input.value = '';
    form.hidden = true;
    start();
  });
  document.getElementById('token-forget').addEventListener('click', () => {
    token.set('');
    form.hidden = true;
    start();
  });
  document.getElementById('token-button').addEventListener('click', () => {
    if (form.hidden) askToken(token.get() ? 'A token is set for this tab; enter another to replace it.' : 'Enter an API token.');
    else form.hidden = true;
  });
}

// ---- status panels --------------------------------------------------------

function renderStatus(st) {
  state.status = st;
  document.getElementById('cluster').textContent = st.cluster || '';
  renderOverview(st);
  renderRegions(st);
  renderHealth(st);
  renderExposure(st);
  if (state.lag && addLagPoints(st)) renderLag();
}

/** The active region and epoch: the data plane's routing state, else the newest epoch event. */
function routing(st) {
  const s = st.traffic && st.traffic.state;
  if (s) return { active: s.active, epoch: s.epoch, held: s.held, noQuorum: s.no_quorum };
  const ev = state.epochEvent;
  const run = (state.runs || []).find((x) => x.epoch);
  return { active: st.active_region, epoch: ev ? ev.epoch : run ? run.epoch : null };
}

function renderOverview(st) {
  const r = routing(st);
  const c = st.control;
  const big = (label, value, id) => el('div', { class: 'big' }, el('span', { class: 'label' }, label), el('strong', { id }, value));
  show('overview',
    el('div', { class: 'overview' },
      big('Active region', r.active || '—', 'active-region'),
      big('Epoch', r.epoch ?? '—', 'epoch'),
      c ? big('Leader', c.leader || 'none', 'leader') : null,
      c ? big('Quorum', c.quorum ? 'yes' : 'NO', 'quorum') : null),
    el('p', { class: 'meta' },
      r.held ? chip('held', 'the data plane holds new requests during a switchover') : null,
      r.noQuorum ? chip('no-quorum', 'this node cannot confirm the routing state: writes are refused') : null,
      `node ${c ? c.node : st.observer}`,
      c && c.members && c.members.length ? [' · members ', c.members.map((m) => [member(m), ' '])] : null,
      c && c.error ? el('span', { class: 'error' }, ' ' + c.error) : null,
      ` · as of ${clock(st.time)}`));
}

/** A control-plane member, green when healthy. */
function member(m) {
  return el('span', { class: 'chip ' + (m.healthy ? 'st-up' : 'st-down'), title: m.healthy ? 'healthy' : 'unhealthy' }, m.name);
}

function renderRegions(st) {
  const active = routing(st).active;
  const regions = st.regions || [];
  if (!regions.length) return show('regions', empty('No regions.'));
  show('regions', el('div', { class: 'cards' }, regions.map((r) => el('article', { class: 'region' + (r.name === active ? ' active' : ''), 'data-region': r.name },
    el('h3', {}, el('span', { class: 'name' }, r.name), r.name === active ? el('span', { class: 'badge' }, 'active') : null),
    el('p', {}, chip(r.state), r.role ? el('span', { class: 'role' }, ` configured ${r.role}`) : null),
    el('p', { class: 'reason' }, r.reason || ''),
    when(r.since) ? el('p', { class: 'since' }, 'since ', clock(r.since)) : null))));
}

function renderHealth(st) {
  const regions = (st.regions || []).map((r) => r.name);
  const services = st.services || [];
  if (!services.length) return show('health', empty('No services.'));
  show('health', table(['Service', ...regions], services.map((s) => [
    el('td', {}, el('strong', {}, s.name), el('span', { class: 'kind' }, ` ${s.kind}${s.critical ? ' · critical' : ''}`)),
    ...regions.map((name) => {
      const e = (s.endpoints || []).find((x) => x.region === name);
      if (!e) return el('td', { class: 'none' }, '—');
      return el('td', { title: e.error || undefined },
        chip(e.health), e.role ? ' ' + e.role : '', el('span', { class: 'latency' }, ` ${e.latency_ms.toFixed(1)} ms`),
        e.error ? el('div', { class: 'cell-error' }, e.error) : null);
    }),
  ]), 'health-grid'));
}

function renderExposure(st) {
  const exp = st.exposure || [];
  const ready = st.readiness || [];
  show('exposure',
    el('h3', {}, 'Exposure (data at risk against the RPO)'),
    exp.length ? table(['Service', 'Standby', 'Lag', 'RPO', 'Status'], exp.map((x) => [
      x.service, x.standby || '—', `${seconds(x.lag_seconds)} · ${bytes(x.lag_bytes)}`, seconds(x.rpo_seconds),
      el('td', {}, chip(x.status), x.reason ? el('div', { class: 'reason' }, x.reason) : null),
    ])) : empty('No data service replicates.'),
    el('h3', {}, 'Readiness of the standbys'),
    ready.length ? el('ul', { class: 'readiness' }, ready.map((r) => el('li', { 'data-region': r.region },
      el('strong', {}, r.region), ' ', chip(r.ready ? 'ready' : 'not-ready'),
      r.ready ? null : el('ul', {}, (r.reasons || []).map((why) => el('li', {}, why)))))) : empty('No standby region.'));
}

// ---- lag chart -------------------------------------------------------------

/** Appends the status's lags to the chart's series; true when one was added. */
function addLagPoints(st) {
  let added = false;
  for (const s of st.services || []) {
    for (const l of s.replication || []) {
      if (!l.seconds_known) continue;
      let series = state.lag.series.find((x) => x.service === s.name && x.standby === l.region);
      if (!series) state.lag.series.push((series = { service: s.name, standby: l.region, points: [] }));
      const t = new Date(l.time);
      const last = series.points[series.points.length - 1];
      if (last && t <= last.t) continue;
      series.points.push({ t, v: l.seconds });
      added = true;
    }
  }
  const t0 = Date.now() - LAG_MINUTES * 60000;
  state.lag.series.forEach((s) => {
    s.points = s.points.filter((p) => p.t >= t0);
  });
  return added;
}

function renderLag() {
  const lag = state.lag;
  if (!lag.series.length) return show('lag', empty('No replication lag measured in the last 15 minutes.'));
  const rpo = lag.rpo_seconds;
  const series = lag.series.map((s) => ({ label: `${s.service} → ${s.standby}`, points: s.points }));
  show('lag',
    lineChart(series, { width: chartWidth('lag'), minutes: LAG_MINUTES, threshold: rpo ? { value: rpo, label: `RPO ${rpo} s` } : null }),
    el('ul', { class: 'legend' }, series.map((s, i) => {
      const last = s.points[s.points.length - 1];
      return el('li', {}, el('span', { class: `swatch s${i % 6}` }), `${s.label}: ${last ? seconds(last.v) : 'no point'}`);
    }), rpo ? el('li', {}, el('span', { class: 'swatch rpo' }), `RPO ${rpo} s`) : null));
}

// ---- runs ----------------------------------------------------------------

function renderRuns() {
  if (state.status) renderOverview(state.status);
  renderRun(state.runs.find((r) => !TERMINAL.includes(r.status)) || state.runs[0]);
  renderHistory(state.runs);
}

function runTitle(r) {
  return `${r.kind} ${r.from} → ${r.to}`;
}

function runDuration(r) {
  const ms = between(r.started_at || r.created_at, r.finished_at);
  if (TERMINAL.includes(r.status)) return el('span', {}, duration(ms));
  return el('span', { class: 'elapsed', 'data-since': r.started_at || r.created_at }, duration(ms));
}

function renderRun(r) {
  const heading = document.querySelector('#run h2');
  if (!r) {
    heading.textContent = 'Current run';
    return show('run', empty('No run yet.'));
  }
  const active = !TERMINAL.includes(r.status);
  heading.textContent = active ? 'Current run' : 'Last run';
  const groups = r.groups && r.groups.length ? r.groups : [''];
  // The outputs the reader opened stay open.
  const open = new Set([...document.querySelectorAll('#run [data-step] details[open]')].map((d) => d.closest('[data-step]').dataset.step));
  show('run',
    el('div', { class: 'run-head', 'data-run': r.id },
      el('strong', {}, runTitle(r)), ' ', chip(r.status), ' ', runDuration(r),
      el('span', { class: 'meta' }, ` · ${r.trigger || ''}${r.by ? ' by ' + r.by : ''} · epoch ${r.start_epoch}${r.epoch ? ' → ' + r.epoch : ''} · ${r.id}`),
      active ? el('button', { type: 'button', class: 'danger', onclick: () => cancel(r) }, 'Cancel run') : null,
      !active && r.report ? reportButton(r) : null),
    r.reason ? el('p', { class: 'reason' }, r.reason) : null,
    r.error ? failed(r.error) : null,
    groups.map((g, gi) => {
      const steps = (r.steps || []).filter((s) => (s.group || 0) === gi);
      if (!steps.length) return null;
      return el('div', { class: 'group' }, g ? el('h3', {}, g) : null,
        el('ol', { class: 'steps' }, steps.map((s) => stepItem(r, s, open))));
    }));
}

function stepItem(r, s, open) {
  const running = s.status === 'running';
  const ms = between(s.started_at, s.finished_at);
  return el('li', { class: 'step', 'data-step': s.name },
    el('span', { class: 'step-name' }, s.name), ' ',
    el('span', { class: 'action' }, s.action), ' ',
    el('span', { class: 'status' }, chip(s.status)), ' ',
    ms === null ? null : running ? el('span', { class: 'elapsed', 'data-since': s.started_at }, duration(ms)) : el('span', { class: 'duration' }, duration(ms)),
    s.attempts > 1 ? el('span', { class: 'meta' }, ` · ${s.attempts} attempts`) : null,
    s.approved_by ? el('span', { class: 'meta' }, ` · approved by ${s.approved_by}`) : null,
    s.status === 'waiting-approval' ? el('button', { type: 'button', onclick: () => approve(r, s) }, `Approve (${s.approve || 'operator'})`) : null,
    s.error ? el('div', { class: 'cell-error' }, s.error) : null,
    s.output ? el('details', { open: open.has(s.name) }, el('summary', {}, 'output'), el('pre', {}, s.output)) : null);
}

function renderHistory(runs) {
  if (!runs.length) return show('history', empty('No run yet.'));
  show('history', table(['Started', 'Kind', 'From → to', 'Status', 'Duration', 'Trigger, by', 'Report'], runs.slice(0, 25).map((r) => [
    clock(r.started_at || r.created_at), r.kind, `${r.from} → ${r.to}`, el('td', {}, chip(r.status)), el('td', {}, runDuration(r)),
    `${r.trigger || ''}${r.by ? ' · ' + r.by : ''}`, el('td', {}, r.report && TERMINAL.includes(r.status) ? reportButton(r) : '—'),
  ])));
}

function reportButton(r) {
  return el('button', { type: 'button', class: 'link', onclick: () => openReport(r) }, 'report');
}

async function approve(r, s) {
  if (!confirm(`Approve step ${s.name} of ${runTitle(r)}?`)) return;
  try {
    await call(`/runs/${encodeURIComponent(r.id)}/approve`, { method: 'POST', body: { step: s.name } });
    loadRuns();
  } catch (e) {
    trouble(e, null);
  }
}

async function cancel(r) {
  if (!confirm(`Cancel ${runTitle(r)}?`)) return;
  try {
    await call(`/runs/${encodeURIComponent(r.id)}/cancel`, { method: 'POST' });
    loadRuns();
  } catch (e) {
    trouble(e, null);
  }
}

/**
 * Opens a run's HTML report in a new window: a link cannot carry the
 * Authorization header, so the page fetches it and shows it as a Blob URL.
 * The window opens at once (while the click still counts as the user's).
 */
async function openReport(r) {
  const w = window.open('', '_blank');
  if (!w) return notice('The browser blocked the report\'s window: allow pop-ups for this page.');
  w.opener = null;
  w.document.title = 'Loading the report…';
  try {
    const b = await blob(r.report + '?format=html');
    const url = URL.createObjectURL(new Blob([b], { type: 'text/html' }));
    w.location = url;
    adoptStyles(w, url);
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    w.close();
    trouble(e, null);
  }
}

/**
 * The Blob document inherits this page's CSP, which refuses the report's
 * inline <style>: once the report has loaded, its rules (the server's own
 * template) are applied through the CSSOM instead.
 */
function adoptStyles(w, url, tries = 100) {
  const d = w.closed ? null : w.document;
  if (!d || tries === 0) return;
  if (d.URL !== url || d.readyState !== 'complete') return void setTimeout(() => adoptStyles(w, url, tries - 1), 50);
  d.adoptedStyleSheets = [...d.querySelectorAll('style')].map((s) => {
    const sheet = new w.CSSStyleSheet();
    sheet.replaceSync(s.textContent);
    return sheet;
  });
}

// ---- drills and events -------------------------------------------------------

/** The width a panel's chart is drawn at: its body's. */
function chartWidth(panel) {
  return Math.max(280, document.querySelector('#' + panel + ' > .body').clientWidth);
}

/** A drill's label under its bar: the time today, else the day. */
function day(s) {
  const c = clock(s);
  return c.length > 8 ? c.slice(5, 10) : c.slice(0, 5);
}

function renderDrills(drills) {
  state.drills = drills;
  if (!drills || !drills.length) return show('drills', empty('No drill yet.'));
  const bad = (d) => (d.writes_lost || 0) > 0 || (d.split_brain_violations || 0) > 0;
  const last = drills.slice(0, 12).reverse();
  show('drills',
    barChart(last.map((x) => ({ label: day(x.drill.fault_at), value: x.drill.recover_seconds, bad: bad(x.drill) })), { width: chartWidth('drills'), label: 'recovery time per drill' }),
    table(['Fault at', 'Scenario', 'Status', 'Detect', 'RTO', 'Errors', 'Writes acked', 'Writes lost', 'Split brain'], drills.map((x) => {
      const d = x.drill || {};
      return [clock(d.fault_at), d.scenario || x.kind, el('td', {}, chip(x.status)), seconds(d.detect_seconds), seconds(d.recover_seconds), d.client_errors ?? '—', d.writes_acked ?? '—',
        el('td', { class: d.writes_lost ? 'bad' : '' }, d.writes_lost ?? '—'), el('td', { class: d.split_brain_violations ? 'bad' : '' }, d.split_brain_violations ?? '—')];
    })));
}

function renderEvents() {
  show('events', el('ol', { class: 'events' }, state.events.map((e) => el('li', { class: 'sev-' + String(e.severity || 'info').replace(/[^a-z]/g, '') },
    el('span', { class: 'when' }, clock(e.time)), ' ',
    // "step step x started" says step twice: the type shows only when the message does not start with it.
    String(e.message).startsWith(e.type + ' ') ? null : [el('span', { class: 'type' }, e.type), ' '],
    e.message))));
}

/** Every second: the elapsed time of what is running. */
function tick() {
  for (const e of document.querySelectorAll('.elapsed[data-since]')) e.textContent = duration(between(e.dataset.since));
}

/** Charts are drawn at their panel's width: draw them again when it changes. */
let resizing = null;
window.addEventListener('resize', () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => {
    if (state.lag) renderLag();
    if (state.drills) renderDrills(state.drills);
  }, 200);
});

setupToken();
document.getElementById('notice').addEventListener('click', hideNotice);
show('events', empty('Events appear here as they happen.'));
start();
