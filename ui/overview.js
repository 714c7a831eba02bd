// Overview: today's numbers, the last 14 days and today's hours by model, the
// tier chain with its quota, and the replicas of the fleet. Live: re-read
// every few seconds while the tab is visible.

import {get} from './api.js';
import {stackedBars} from './chart.js';
import {fill, h, thead} from './dom.js';
import {compact, daysBetween, duration, num, relative, usd, when} from './fmt.js';

const REFRESH_MS = 3000;

/** Per-model series of a list of buckets ({by_model}) aligned with labels. */
export function modelSeries(labels, byLabel, metric) {
  const models = new Map();
  labels.forEach((label, i) => {
    const bm = (byLabel.get(label) || {}).by_model || {};
    for (const [model, v] of Object.entries(bm)) {
      if (!models.has(model)) models.set(model, new Array(labels.length).fill(0));
      models.get(model)[i] += Number(metric === 'requests' ? v.requests : v.total) || 0;
    }
  });
  return [...models].map(([name, values]) => ({name, values}));
}

function card(metric, label, value, sub, shown = num(value)) {
  return h('div', {class: 'card', dataset: {metric, value}},
    h('span', {class: 'card-label', text: label}),
    h('span', {class: 'card-value', text: shown}),
    h('span', {class: 'card-sub', text: sub}));
}

function renderCards(el, daily) {
  const today = daily.to;
  const d = daily.days.find((x) => x.date === today) || {};
  const req = Number(d.total_requests) || 0;
  const inp = Number(d.total_input) || 0;
  const out = Number(d.total_output) || 0;
  const err = Number(d.total_errors) || 0;
  const rate = req + err > 0 ? ` · ${((100 * err) / (req + err)).toFixed(1)}% of requests` : '';
  const cards = [
    card('requests', 'Requests today', req, `${today} (USAGE_TZ)`),
    card('tokens', 'Tokens today', inp + out, `in ${compact(inp)} · out ${compact(out)} · cache read ${compact(d.total_cache_read)}`),
    card('errors', 'Errors today', err, `answered with an error${rate}`),
  ];
  // The API always gives cost_usd (0 for models PRICES_CONFIG does not price); the card
  // is shown only once something was priced in the window, so an unpriced gateway shows no "$0".
  if (daily.days.some((x) => Number(x.cost_usd) > 0)) {
    const cost = Number(d.cost_usd) || 0;
    const range = daily.days.reduce((t, x) => t + (Number(x.cost_usd) || 0), 0);
    cards.push(card('cost', 'Cost today', cost, `${usd(range)} over 14 days`, usd(cost)));
  }
  fill(el, cards);
}

function renderDaily(el, daily, metric) {
  const labels = daysBetween(daily.from, daily.to);
  const byDate = new Map(daily.days.map((d) => [d.date, d]));
  fill(el, stackedBars({
    labels, series: modelSeries(labels, byDate, metric), unit: metric, title: `${metric} by model, last 14 days`,
    tick: (d) => d.slice(5), width: el.clientWidth,
  }));
}

function renderHourly(el, hourly, metric) {
  const labels = Array.from({length: 24}, (_, i) => `${hourly.to} ${String(i).padStart(2, '0')}:00`);
  const byHour = new Map(hourly.hours.map((x) => [x.hour, x]));
  fill(el, stackedBars({
    labels, series: modelSeries(labels, byHour, metric), unit: metric, title: `${metric} by model today, by hour`,
    tick: (l) => l.slice(11, 13), width: el.clientWidth,
  }));
}

function badge(text, kind) {
  return h('span', {class: `badge ${kind}`, text});
}

function renderTiers(el, fb) {
  const meta = [
    badge(fb.enabled ? 'fallback on' : 'fallback off', fb.enabled ? 'ok' : 'muted'),
    h('span', {text: fb.last_health_poll ? `quota polled ${relative(fb.last_health_poll)} (${when(fb.last_health_poll)})` : 'quota never polled'}),
    fb.stale ? badge('stale quota data', 'warn') : null,
    fb.last_poll_error ? h('span', {class: 'error-text', text: `last poll failed: ${fb.last_poll_error}`}) : null,
  ];
  const rows = fb.tiers.map((t, i) => {
    const pct = typeof t.fraction === 'number' ? Math.round(t.fraction * 100) : null;
    const until = t.exhausted_until;
    return h('tr', {dataset: {model: t.model}},
      h('td', {class: 'num', 'data-label': '#', text: i + 1}),
      h('td', {class: 'name', 'data-label': 'Tier'}, h('span', {class: 'strong', text: t.name}),
        h('span', {class: 'sub mono', text: t.model}), h('span', {class: 'sub', text: t.type})),
      h('td', {'data-label': 'Quota'},
        pct === null ? h('span', {class: 'muted', text: t.remaining})
          : h('span', {class: 'quota'}, h('meter', {min: 0, max: 100, low: Math.round(fb.min_remaining_fraction * 100) + 1,
            optimum: 100, value: pct, 'aria-label': `${t.name} quota`}), h('span', {text: `${pct}%`}))),
      h('td', {'data-label': 'State'}, t.available ? badge('available', 'ok') : badge('unavailable', 'bad')),
      h('td', {'data-label': 'Exhausted until'}, until ? h('span', {text: `${when(until)} (${relative(until)})`}) : h('span', {class: 'muted', text: '—'})),
      h('td', {'data-label': 'Quota resets'}, t.reset_time ? h('span', {text: when(t.reset_time)}) : h('span', {class: 'muted', text: '—'})),
      h('td', {'data-label': 'Data age'}, typeof t.data_age_seconds === 'number'
        ? h('span', {class: t.stale ? 'warn-text' : '', text: duration(t.data_age_seconds)})
        : h('span', {class: 'muted', text: t.type === 'external' ? 'no quota' : '—'})));
  });
  fill(el, h('p', {class: 'meta'}, meta), h('div', {class: 'table-wrap'}, h('table', {class: 'grid-table'},
    thead(['#', 'Tier', 'Quota', 'State', 'Exhausted until', 'Quota resets', 'Data age'], ['#']),
    h('tbody', {}, rows))));
}

function renderFleet(el, fleet) {
  const versions = new Set(fleet.replicas.map((r) => r.version));
  const rows = fleet.replicas.map((r) => h('tr', {dataset: {replica: r.id}},
    h('td', {class: 'name', 'data-label': 'Replica'}, h('span', {class: 'strong mono', text: r.id}),
      r.id === fleet.answered_by ? badge('answered this page', 'muted') : null,
      h('span', {class: 'sub', text: `${r.host} · pid ${r.pid} · port ${r.port}`})),
    h('td', {'data-label': 'Version', class: 'mono', text: r.version}),
    h('td', {'data-label': 'Up', text: duration(r.uptime_seconds), title: when(r.started)}),
    h('td', {class: 'num', 'data-label': 'In flight', text: num(r.in_flight)}),
    h('td', {class: 'num', 'data-label': 'Streams', text: num(r.streams)}),
    h('td', {class: 'num', 'data-label': 'Usage pending', text: num(r.usage_pending)}),
    h('td', {'data-label': 'Last seen', text: `${duration(r.age_seconds)} ago`}),
    h('td', {'data-label': 'State'}, r.draining ? badge('draining', 'warn') : badge('serving', 'ok'))));
  fill(el,
    h('p', {class: 'meta'}, h('span', {text: `${fleet.replicas.length} replica${fleet.replicas.length === 1 ? '' : 's'} seen in the last ${fleet.window_seconds} s`}),
      versions.size > 1 ? badge(`${versions.size} versions running`, 'warn') : null),
    h('div', {class: 'table-wrap'}, h('table', {class: 'grid-table'},
      thead(['Replica', 'Version', 'Up', 'In flight', 'Streams', 'Usage pending', 'Last seen', 'State'],
        ['In flight', 'Streams', 'Usage pending']),
      h('tbody', {}, rows))));
}

function panel(title, body, extra) {
  return h('section', {class: 'panel'}, h('div', {class: 'panel-head'}, h('h2', {text: title}), extra), body);
}

function problem(el, err) {
  fill(el, h('p', {class: 'error-text', text: err.message || String(err)}));
}

export function mount(root, app) {
  let metric = 'tokens';
  let timer = null;
  let alive = true;
  let busy = false;
  const last = {};
  const cards = h('div', {class: 'cards', id: 'cards'});
  const daily = h('div', {class: 'chart-box', id: 'chart-daily'});
  const hourly = h('div', {class: 'chart-box', id: 'chart-hourly'});
  const tiers = h('div', {id: 'tiers'});
  const fleet = h('div', {id: 'fleet'});
  const toggle = h('div', {class: 'segmented', role: 'group', 'aria-label': 'Chart metric'},
    ['tokens', 'requests'].map((m) => h('button', {type: 'button', class: 'btn small', 'aria-pressed': String(m === metric), text: m,
      on: {click: (ev) => {
        metric = m;
        for (const b of toggle.children) b.setAttribute('aria-pressed', String(b === ev.currentTarget));
        draw();
      }}})));
  root.append(h('h1', {class: 'visually-hidden', text: 'Overview'}), cards,
    panel('Last 14 days', daily, toggle), panel('Today by hour', hourly),
    panel('Tier chain', tiers), panel('Replicas', fleet));

  function draw() {
    if (last.daily) renderDaily(daily, last.daily, metric);
    if (last.hourly) renderHourly(hourly, last.hourly, metric);
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    const [d, hr, fb, fl] = await Promise.allSettled([
      get('usage/daily', {days: 14}), get('usage/hourly', {days: 1}), get('fallback'), get('fleet')]);
    busy = false;
    if (!alive) return;
    const failed = [d, hr, fb, fl].find((r) => r.status === 'rejected');
    if (d.status === 'fulfilled') {
      last.daily = d.value;
      renderCards(cards, d.value);
    } else problem(cards, d.reason);
    if (hr.status === 'fulfilled') last.hourly = hr.value;
    draw();
    if (fb.status === 'fulfilled') renderTiers(tiers, fb.value); else problem(tiers, fb.reason);
    if (fl.status === 'fulfilled') renderFleet(fleet, fl.value); else problem(fleet, fl.reason);
    if (failed) app.fail(failed.reason);
    else app.status(`Live · updated ${new Date().toLocaleTimeString()}`, 'ok');
    if (alive && failed?.reason?.auth !== true) timer = setTimeout(tick, REFRESH_MS);
  }
  function tick() {
    if (document.hidden) timer = setTimeout(tick, REFRESH_MS);
    else refresh();
  }
  const onVisible = () => { if (!document.hidden) refresh(); };
  const onResize = () => draw();
  document.addEventListener('visibilitychange', onVisible);
  window.addEventListener('resize', onResize);
  refresh();
  return () => {
    alive = false;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisible);
    window.removeEventListener('resize', onResize);
  };
}
