// Two small SVG charts drawn by hand: lines over time with a threshold
// (replication lag against the RPO) and bars (drills' recovery times).
// Colours come from the stylesheet (classes s0…s5), never inline styles.
// A chart is drawn at the width it is shown at, so its text keeps its size;
// the page draws it again when the window is resized.

const NS = 'http://www.w3.org/2000/svg'; // the SVG namespace's name, not a resource
const H = 220;
const M = { left: 48, right: 12, top: 16, bottom: 24 };

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Rounds a maximum up to a readable axis step: 1, 2 or 5 × 10^n, four steps. */
function niceStep(max) {
  const raw = max / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

function frame(label, W, yMax, unit) {
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart', role: 'img', 'aria-label': label });
  const step = niceStep(yMax);
  const top = step * Math.ceil(yMax / step);
  const y = (v) => M.top + (H - M.top - M.bottom) * (1 - Math.max(0, v) / top);
  for (let v = 0; v <= top + step / 2; v += step) {
    root.append(svg('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: 'gridline' }));
    root.append(svg('text', { x: M.left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, +v.toPrecision(3) + unit));
  }
  return { root, y };
}

/**
 * Lines over the last `minutes`: series are {label, points: [{t: Date, v}]};
 * threshold {value, label} is drawn as a dashed horizontal line. A gap of
 * more than a minute between two points breaks the line.
 */
export function lineChart(series, { width: W, minutes, threshold, unit = ' s', now = new Date() }) {
  const t0 = now - minutes * 60000;
  const vals = series.flatMap((s) => s.points.map((p) => p.v));
  const yMax = Math.max(1e-3, threshold ? threshold.value * 1.15 : 0, ...vals.map((v) => v * 1.1));
  const { root, y } = frame('replication lag', W, yMax, unit);
  const x = (t) => M.left + ((W - M.left - M.right) * (t - t0)) / (now - t0);
  for (let m = minutes; m >= 0; m -= 5) {
    root.append(svg('text', { x: x(now - m * 60000), y: H - 6, class: 'tick', 'text-anchor': m === minutes ? 'start' : m ? 'middle' : 'end' }, m ? `−${m} min` : 'now'));
  }
  series.forEach((s, i) => {
    let run = [];
    const flush = () => {
      if (run.length === 1) root.append(svg('circle', { cx: run[0][0], cy: run[0][1], r: 2, class: `dot s${i % 6}` }));
      if (run.length > 1) root.append(svg('polyline', { points: run.join(' '), class: `line s${i % 6}` }));
      run = [];
    };
    let prev = null;
    for (const p of s.points) {
      if (p.t < t0) continue;
      if (prev && p.t - prev > 60000) flush();
      run.push([x(p.t).toFixed(1), y(Math.min(p.v, yMax * 1.2)).toFixed(1)]);
      prev = p.t;
    }
    flush();
  });
  if (threshold) {
    root.append(svg('line', { x1: M.left, x2: W - M.right, y1: y(threshold.value), y2: y(threshold.value), class: 'threshold' }));
    root.append(svg('text', { x: W - M.right - 4, y: y(threshold.value) - 4, class: 'threshold-label', 'text-anchor': 'end' }, threshold.label));
  }
  return root;
}

/** Bars, oldest first: items are {label, value, bad}; bad bars are red. */
export function barChart(items, { width: W, label, unit = ' s' }) {
  const yMax = Math.max(1e-3, ...items.map((it) => (it.value || 0) * 1.15));
  const { root, y } = frame(label, W, yMax, unit);
  const slot = (W - M.left - M.right) / Math.max(items.length, 1);
  items.forEach((it, i) => {
    const w = Math.min(slot * 0.7, 56);
    const x = M.left + slot * i + (slot - w) / 2;
    const cls = it.bad ? 'bar bad' : 'bar';
    if (it.value !== null && it.value !== undefined) {
      root.append(svg('rect', { x, y: y(it.value), width: w, height: Math.max(1, y(0) - y(it.value)), class: cls }));
      root.append(svg('text', { x: x + w / 2, y: y(it.value) - 4, class: 'tick', 'text-anchor': 'middle' }, it.value.toFixed(1) + unit));
    }
    root.append(svg('text', { x: x + w / 2, y: H - 6, class: 'tick', 'text-anchor': 'middle' }, it.label));
  });
  return root;
}
