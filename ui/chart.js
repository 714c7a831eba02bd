// Stacked bar charts drawn as SVG by our own code: one bar per bucket (a day,
// an hour), one coloured segment per series (a model, a key). Colours come
// from classes (s0..s7 in app.css), sizes from SVG geometry attributes, text
// from textContent; nothing is inline style or markup. Each segment has a
// <title> (the browser's tooltip), and the figure carries the numbers as
// data-total for tests and an aria-label for screen readers.

import {h, s} from './dom.js';
import {compact, num} from './fmt.js';

const MAX_SERIES = 7; // the rest are summed as "other"

/** A "nice" axis maximum and step for values up to max. */
function axis(max) {
  if (max <= 0) return {top: 4, step: 1};
  const raw = max / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= raw);
  return {top: step * Math.ceil(max / step), step};
}

/** Keeps the biggest series and sums the rest into "other". */
function fold(series) {
  const sorted = [...series].sort((a, b) => sum(b.values) - sum(a.values));
  if (sorted.length <= MAX_SERIES) return sorted;
  const keep = sorted.slice(0, MAX_SERIES - 1);
  const rest = sorted.slice(MAX_SERIES - 1);
  const other = rest[0].values.map((_, i) => rest.reduce((t, r) => t + (r.values[i] || 0), 0));
  return [...keep, {name: `other (${rest.length})`, values: other}];
}

const sum = (a) => a.reduce((t, v) => t + (v || 0), 0);

/**
 * labels: bucket names; series: [{name, values}] (values aligned with labels);
 * unit: "tokens" or "requests"; tick: label -> short axis text; width: pixels.
 */
export function stackedBars({labels, series, unit, tick = (l) => l, width = 640, title}) {
  const folded = fold(series.filter((x) => sum(x.values) > 0));
  const totals = labels.map((_, i) => folded.reduce((t, x) => t + (x.values[i] || 0), 0));
  const grand = sum(totals);
  const W = Math.max(280, Math.round(width));
  const H = W < 480 ? 180 : 220;
  const pad = {l: 44, r: 8, t: 8, b: 22};
  const plotW = W - pad.l - pad.r;
  const plotH = H - pad.t - pad.b;
  const {top, step} = axis(Math.max(...totals, 0));
  const y = (v) => pad.t + plotH - (v / top) * plotH;
  const band = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, Math.min(40, band * 0.7));

  const svg = s('svg', {
    class: 'chart-svg', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': `${title}: ${num(grand)} ${unit} in total`,
  });
  for (let v = 0; v <= top + step / 2; v += step) {
    svg.append(s('line', {class: 'grid', x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v)}),
      s('text', {class: 'tick', x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end', text: compact(v)}));
  }
  const every = Math.ceil(labels.length / Math.max(1, Math.floor(plotW / 44)));
  labels.forEach((label, i) => {
    const x = pad.l + i * band + (band - barW) / 2;
    let base = 0;
    folded.forEach((ser, k) => {
      const v = ser.values[i] || 0;
      if (v <= 0) return;
      svg.append(s('rect', {class: `seg s${k}`, x, width: barW, y: y(base + v), height: Math.max(0.5, y(base) - y(base + v))},
        s('title', {text: `${label} · ${ser.name}: ${num(v)} ${unit}`})));
      base += v;
    });
    if (i % every === 0) {
      svg.append(s('text', {class: 'tick', x: x + barW / 2, y: H - 6, 'text-anchor': 'middle', text: tick(label)}));
    }
  });
  if (grand === 0) {
    svg.append(s('text', {class: 'empty', x: pad.l + plotW / 2, y: pad.t + plotH / 2, 'text-anchor': 'middle',
      text: `No ${unit} in this period`}));
  }
  const legend = h('ul', {class: 'legend'}, folded.map((ser, k) =>
    h('li', {}, h('span', {class: `swatch s${k}`, 'aria-hidden': 'true'}), h('span', {class: 'legend-name', text: ser.name}),
      h('span', {class: 'legend-value', text: num(sum(ser.values))}))));
  return h('figure', {class: 'chart', dataset: {total: grand, buckets: labels.length, series: folded.length}},
    svg, folded.length ? legend : null);
}
