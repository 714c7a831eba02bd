// Usage explorer: per model or per key, daily or hourly, over a date range,
// for every key or one; a chart, a table and a CSV export of the table. The
// route keeps the choice (#/usage?g=hour&from=...&to=...&key=...&by=key), so a
// view can be bookmarked or shared.

import {get} from './api.js';
import {stackedBars} from './chart.js';
import {fill, h, thead} from './dom.js';
import {addDays, csv, daysBetween, num, usd} from './fmt.js';

const MAX_ROWS = 2000; // rows drawn in the table; the CSV has them all

const nz = (v) => (typeof v === 'number' ? v : Number(v) || 0);
const opt = (v) => (v === undefined || v === null ? null : Number(v));
const costOf = (o) => (typeof o.cost_usd === 'number' ? o.cost_usd : null);

/** Rows {bucket, model, keyId, keyName, requests, input, output, total, cost} of the answer. */
export function rowsOf(doc, q) {
  const rows = [];
  const add = (bucket, r) => rows.push({bucket, model: '', keyId: '', keyName: '', cost: null, ...r});
  const models = (bucket, bm, extra = {}) => {
    for (const [model, v] of Object.entries(bm || {})) {
      add(bucket, {...extra, model, requests: nz(v.requests), input: opt(v.input), output: opt(v.output), total: nz(v.total), cost: costOf(v)});
    }
  };
  if (q.key) {
    const u = doc.usage;
    const buckets = q.g === 'hour' ? u.hourly : u.daily;
    const extra = {keyId: doc.id, keyName: doc.name};
    for (const [bucket, v] of Object.entries(buckets || {})) {
      if (bucket.slice(0, 10) >= q.from && bucket.slice(0, 10) <= q.to) models(bucket, v.by_model, extra);
    }
  } else {
    for (const b of (q.g === 'hour' ? doc.hours : doc.days) || []) {
      const bucket = q.g === 'hour' ? b.hour : b.date;
      if (q.by === 'model') {
        models(bucket, b.by_model);
      } else {
        for (const k of b.keys || []) {
          const input = opt(k.input);
          const output = opt(k.output);
          add(bucket, {keyId: k.id, keyName: k.name, requests: nz(k.requests), input, output,
            total: k.total !== undefined ? nz(k.total) : nz(input) + nz(output), cost: costOf(k)});
        }
      }
    }
  }
  rows.sort((a, b) => (a.bucket < b.bucket ? -1 : a.bucket > b.bucket ? 1 : b.total - a.total));
  return rows;
}

/** Chart labels: every day, or every hour of every day, of the range. */
function labelsOf(q) {
  const days = daysBetween(q.from, q.to);
  return q.g === 'hour' ? days.flatMap((d) => Array.from({length: 24}, (_, i) => `${d} ${String(i).padStart(2, '0')}:00`)) : days;
}

function seriesOf(rows, labels, q) {
  const index = new Map(labels.map((l, i) => [l, i]));
  const byKey = q.by === 'key' && !q.key;
  const names = new Map();
  const series = new Map();
  for (const r of rows) {
    const id = byKey ? r.keyId : r.model;
    if (!series.has(id)) series.set(id, new Array(labels.length).fill(0));
    names.set(id, byKey ? r.keyName : r.model);
    const i = index.get(r.bucket);
    if (i !== undefined) series.get(id)[i] += q.metric === 'requests' ? r.requests : r.total;
  }
  // Two keys may share a name: their ids tell them apart.
  const count = {};
  for (const n of names.values()) count[n] = (count[n] || 0) + 1;
  return [...series].map(([id, values]) => ({name: count[names.get(id)] > 1 ? `${names.get(id)} (${id})` : names.get(id), values}));
}

function select(id, label, options, value) {
  return h('label', {class: 'field', for: id}, h('span', {text: label}),
    h('select', {id}, options.map(([v, text]) => h('option', {value: v, text, selected: v === value}))));
}

export function mount(root, app) {
  let alive = true;
  let shown = null; // {q, rows}: what the table and chart show, for the CSV
  const p = app.params();
  const q = {
    g: p.get('g') === 'hour' ? 'hour' : 'day',
    from: p.get('from') || '', to: p.get('to') || '',
    key: p.get('key') || '', by: p.get('by') === 'key' ? 'key' : 'model',
    metric: p.get('metric') === 'requests' ? 'requests' : 'tokens',
  };
  const keySelect = select('u-key', 'Key', [['', 'All keys']], q.key);
  const form = h('form', {class: 'controls', id: 'usage-controls', novalidate: true},
    select('u-g', 'Granularity', [['day', 'Daily'], ['hour', 'Hourly']], q.g),
    h('label', {class: 'field', for: 'u-from'}, h('span', {text: 'From'}), h('input', {id: 'u-from', type: 'date', value: q.from})),
    h('label', {class: 'field', for: 'u-to'}, h('span', {text: 'To'}), h('input', {id: 'u-to', type: 'date', value: q.to})),
    keySelect,
    select('u-by', 'Group by', [['model', 'Model'], ['key', 'Key']], q.by),
    select('u-metric', 'Chart', [['tokens', 'Tokens'], ['requests', 'Requests']], q.metric),
    h('div', {class: 'field buttons'},
      h('button', {type: 'submit', class: 'btn primary', text: 'Show'}),
      h('button', {type: 'button', class: 'btn', id: 'u-csv', text: 'Export CSV', on: {click: exportCsv}})));
  const quick = h('div', {class: 'quick', role: 'group', 'aria-label': 'Quick ranges'},
    [['Today', 0], ['7 days', 6], ['30 days', 29], ['90 days', 89]].map(([text, back]) =>
      h('button', {type: 'button', class: 'btn small', text, on: {click: () => setRange(back)}})));
  const summary = h('p', {class: 'meta', id: 'usage-summary', role: 'status'});
  const chart = h('div', {class: 'chart-box', id: 'usage-chart'});
  const table = h('div', {id: 'usage-table'});
  root.append(h('div', {class: 'page-head'}, h('h1', {text: 'Usage'})),
    h('section', {class: 'panel'}, form, quick),
    h('section', {class: 'panel'}, summary, chart),
    h('section', {class: 'panel'}, table));
  const $ = (id) => form.querySelector(`#${id}`);

  function readForm() {
    q.g = $('u-g').value;
    q.from = $('u-from').value;
    q.to = $('u-to').value;
    q.key = $('u-key').value;
    q.by = q.key ? 'model' : $('u-by').value;
    q.metric = $('u-metric').value;
    $('u-by').disabled = !!q.key; // one key: by model only
  }

  function setRange(back) {
    const to = q.today || q.to;
    $('u-to').value = to;
    $('u-from').value = addDays(to, -back);
    if (back > 0 && $('u-g').value === 'hour' && back > 30) $('u-g').value = 'day';
    readForm();
    load();
  }

  async function load() {
    readForm();
    const params = new URLSearchParams(Object.entries(q).filter(([k, v]) => v && k !== 'today'));
    app.setParams(params);
    summary.textContent = 'Loading…';
    try {
      if (!q.today) q.today = (await get('usage/daily', {days: 1})).to;
      if (!q.to) $('u-to').value = q.to = q.today;
      if (!q.from) $('u-from').value = q.from = q.g === 'hour' ? q.to : addDays(q.to, -13);
      if (q.from > q.to) throw new Error('"From" is after "To".');
      const doc = q.key ? await get(`keys/${encodeURIComponent(q.key)}/usage`)
        : await get(q.g === 'hour' ? 'usage/hourly' : 'usage/daily', {from: q.from, to: q.to});
      if (!alive) return;
      draw({...q}, rowsOf(doc, q));
    } catch (e) {
      summary.textContent = e.message;
      summary.className = 'meta error-text';
      if (e.auth) app.fail(e);
    }
  }

  function draw(qq, rows) {
    shown = {q: qq, rows};
    const labels = labelsOf(qq);
    const req = rows.reduce((t, r) => t + r.requests, 0);
    const tok = rows.reduce((t, r) => t + r.total, 0);
    const hasCost = rows.some((r) => r.cost > 0); // cost_usd is always given; 0 everywhere = nothing priced
    summary.className = 'meta';
    summary.textContent = `${num(req)} requests · ${num(tok)} tokens · ${qq.from} to ${qq.to} (USAGE_TZ)`;
    summary.dataset.requests = req;
    summary.dataset.tokens = tok;
    fill(chart, stackedBars({
      labels, series: seriesOf(rows, labels, qq), unit: qq.metric, width: chart.clientWidth,
      title: `${qq.metric} by ${qq.by}, ${qq.g === 'hour' ? 'hourly' : 'daily'}`,
      tick: qq.g === 'hour' ? (l) => (labels.length > 24 ? l.slice(5, 13) : l.slice(11, 13)) : (l) => l.slice(5),
    }));
    const byKey = qq.by === 'key' || !!qq.key;
    const cols = [qq.g === 'hour' ? 'Hour' : 'Date', byKey && !qq.key ? 'Key' : 'Model', 'Requests', 'Input', 'Output', 'Tokens',
      hasCost ? 'Cost' : null].filter(Boolean);
    const cell = (v) => (v === null ? '—' : num(v));
    const body = rows.slice(0, MAX_ROWS).map((r) => h('tr', {},
      h('td', {class: 'mono', 'data-label': cols[0], text: r.bucket}),
      h('td', {class: 'name', 'data-label': cols[1]}, byKey && !qq.key
        ? [h('span', {class: 'key-name', text: r.keyName}), h('span', {class: 'sub mono', text: r.keyId})]
        : h('span', {class: 'mono', text: r.model})),
      h('td', {class: 'num', 'data-label': 'Requests', text: num(r.requests)}),
      h('td', {class: 'num', 'data-label': 'Input', text: cell(r.input)}),
      h('td', {class: 'num', 'data-label': 'Output', text: cell(r.output)}),
      h('td', {class: 'num', 'data-label': 'Tokens', text: num(r.total)}),
      hasCost ? h('td', {class: 'num', 'data-label': 'Cost', text: r.cost === null ? '—' : usd(r.cost)}) : null));
    fill(table, rows.length ? h('div', {class: 'table-wrap'}, h('table', {class: 'grid-table', id: 'usage-rows'},
      thead(cols, ['Requests', 'Input', 'Output', 'Tokens', 'Cost']),
      h('tbody', {}, body),
      h('tfoot', {}, h('tr', {}, h('th', {scope: 'row', text: 'Total'}), h('td', {}),
        h('td', {class: 'num', 'data-label': 'Requests', text: num(req)}), h('td', {}), h('td', {}),
        h('td', {class: 'num', 'data-label': 'Tokens', text: num(tok)}), hasCost ? h('td', {}) : null))))
      : h('p', {class: 'muted', text: 'No usage in this range.'}),
    rows.length > MAX_ROWS ? h('p', {class: 'muted', text: `Showing the first ${MAX_ROWS} of ${rows.length} rows; the CSV has them all.`}) : null);
  }

  function exportCsv() {
    if (!shown) return;
    const {q: qq, rows} = shown;
    const hasCost = rows.some((r) => r.cost > 0); // cost_usd is always given; 0 everywhere = nothing priced
    const header = [qq.g === 'hour' ? 'hour' : 'date', 'model', 'key_id', 'key_name', 'requests', 'input_tokens', 'output_tokens',
      'total_tokens', ...(hasCost ? ['cost_usd'] : [])];
    const text = csv(header, rows.map((r) => [r.bucket, r.model, r.keyId, r.keyName, r.requests, r.input, r.output, r.total,
      ...(hasCost ? [r.cost] : [])]));
    const url = URL.createObjectURL(new Blob([text], {type: 'text/csv;charset=utf-8'}));
    const a = h('a', {href: url, download: `usage-${qq.g === 'hour' ? 'hourly' : 'daily'}-${qq.from}-${qq.to}-by-${qq.key ? 'model' : qq.by}${qq.key ? `-key-${qq.key}` : ''}.csv`});
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    load();
  });
  form.addEventListener('change', () => load());
  const onResize = () => shown && draw(shown.q, shown.rows);
  window.addEventListener('resize', onResize);

  // The key list first: the form is read from the page, and the route may name a key.
  get('keys').then((doc) => {
    if (!alive) return;
    const sel = $('u-key');
    for (const k of doc.keys) sel.append(h('option', {value: k.id, text: `${k.name} (${k.key})`, selected: k.id === q.key}));
    if (q.key && sel.value !== q.key) sel.append(h('option', {value: q.key, text: `key ${q.key} (deleted?)`, selected: true}));
    load();
  }).catch((e) => app.fail(e));
  return () => {
    alive = false;
    window.removeEventListener('resize', onResize);
  };
}
