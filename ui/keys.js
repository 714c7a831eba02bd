// Keys: the list (masked key, name, status, dates, totals, policy when the
// gateway has per-key policies), create (the full key shown once), disable,
// enable and delete (after a confirmation).

import {api, get} from './api.js';
import {fill, h, thead} from './dom.js';
import {compact, num, relative, usd, when} from './fmt.js';

const REFRESH_MS = 5000;

/** A policy object as short "field: value" lines (read-only). */
function policyText(p) {
  if (!p || typeof p !== 'object') return [];
  return Object.entries(p).filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : v}`);
}

function costOf(k) {
  for (const f of ['total_cost_usd', 'cost_usd']) if (typeof k[f] === 'number') return k[f];
  return null;
}

export function mount(root, app) {
  let timer = null;
  let alive = true;
  let keys = [];
  let loading = null; // the read under way
  let again = false;   // another read is wanted after it

  const nameInput = h('input', {id: 'new-key-name', name: 'name', maxlength: 200, required: true, autocomplete: 'off',
    placeholder: 'e.g. alice-laptop', spellcheck: 'false'});
  const createError = h('p', {class: 'error', role: 'alert', hidden: true});
  const createForm = h('form', {class: 'inline-form', id: 'create-key', novalidate: true, on: {submit: create}},
    h('label', {for: 'new-key-name', text: 'New key name'}), nameInput,
    h('button', {type: 'submit', class: 'btn primary', text: 'Create key'}), createError);
  const newKey = h('div', {id: 'new-key', hidden: true});
  const filter = h('input', {id: 'key-filter', type: 'search', placeholder: 'Filter by name or id', 'aria-label': 'Filter keys',
    on: {input: draw}});
  const count = h('span', {class: 'muted', id: 'key-count'});
  const table = h('div', {id: 'keys-table'});
  const dialog = h('dialog', {class: 'dialog', id: 'confirm-delete', 'aria-labelledby': 'confirm-title'});
  root.append(h('div', {class: 'page-head'}, h('h1', {text: 'Keys'})),
    h('section', {class: 'panel'}, createForm, newKey),
    h('section', {class: 'panel'}, h('div', {class: 'panel-head'}, h('h2', {text: 'All keys'}), count, filter), table),
    dialog);

  async function create(ev) {
    ev.preventDefault();
    const name = nameInput.value.trim();
    createError.hidden = true;
    if (!name) {
      createError.textContent = 'Give the key a name (who or what uses it).';
      createError.hidden = false;
      nameInput.focus();
      return;
    }
    try {
      const k = await api('POST', 'keys', {name});
      nameInput.value = '';
      showNewKey(k);
      await load();
    } catch (e) {
      if (e.auth) app.fail(e);
      createError.textContent = e.message;
      createError.hidden = false;
    }
  }

  function showNewKey(k) {
    const value = h('input', {id: 'new-key-value', class: 'mono', readonly: true, value: k.api_key, 'aria-label': `The new key for ${k.name}`,
      spellcheck: 'false', on: {focus: (ev) => ev.target.select()}});
    const copied = h('p', {class: 'copy-status', role: 'status'});
    const copy = async () => {
      value.select();
      try {
        await navigator.clipboard.writeText(value.value);
        copied.textContent = 'Copied to the clipboard.';
      } catch {
        // No clipboard access (plain http on another host): the key is selected instead.
        copied.textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
      }
    };
    const done = h('button', {type: 'button', class: 'btn', id: 'new-key-done', text: 'Done: I stored the key',
      on: {click: () => {
        value.value = '';
        fill(newKey);
        newKey.hidden = true;
        nameInput.focus();
      }}});
    fill(newKey, h('div', {class: 'new-key', role: 'region', 'aria-labelledby': 'new-key-title'},
      h('h2', {id: 'new-key-title'}, 'New key for ', h('span', {class: 'strong', text: k.name})),
      h('p', {class: 'warn-text', text: 'Copy it now: this is the only time the full key is shown. The gateway keeps only its hash; a lost key cannot be recovered, only replaced.'}),
      h('div', {class: 'copy-row'}, value, h('button', {type: 'button', class: 'btn primary', id: 'copy-key', text: 'Copy', on: {click: copy}})),
      copied, done));
    newKey.hidden = false;
    value.focus();
  }

  function confirmDelete(k) {
    return new Promise((resolve) => {
      fill(dialog,
        h('h2', {id: 'confirm-title', text: 'Delete this key?'}),
        h('p', {}, h('span', {class: 'strong', text: k.name}), ' ', h('span', {class: 'mono', text: `(${k.key})`})),
        h('p', {text: 'Every replica refuses it at once. Its usage stays in the totals and history. This cannot be undone.'}),
        h('div', {class: 'actions'},
          h('button', {type: 'button', class: 'btn', text: 'Cancel', on: {click: () => dialog.close('no')}}),
          h('button', {type: 'button', class: 'btn danger', id: 'confirm-delete-yes', text: 'Delete key',
            on: {click: () => dialog.close('yes')}})));
      dialog.returnValue = '';
      // Escape closes it too, with no return value.
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), {once: true});
      dialog.showModal();
      dialog.querySelector('.btn').focus(); // Cancel: the safe default
    });
  }

  async function act(k, what) {
    try {
      if (what === 'delete') {
        if (!(await confirmDelete(k))) return;
        await api('DELETE', `keys/${encodeURIComponent(k.id)}`);
      } else {
        await api('POST', `keys/${encodeURIComponent(k.id)}/${what}`);
      }
      app.status(`Key "${k.name}" ${what === 'delete' ? 'deleted' : `${what}d`}.`, 'ok');
      await load();
    } catch (e) {
      app.fail(e);
    }
  }

  function row(k, showPolicy, showCost) {
    const policy = policyText(k.policy);
    const cost = costOf(k);
    return h('tr', {dataset: {id: k.id}, class: k.enabled ? '' : 'disabled'},
      h('td', {class: 'name', 'data-label': 'Name'}, h('span', {class: 'strong key-name', text: k.name}), h('span', {class: 'sub mono', text: k.id})),
      h('td', {class: 'mono', 'data-label': 'Key', text: k.key}),
      h('td', {'data-label': 'Status'}, h('span', {class: `badge ${k.enabled ? 'ok' : 'bad'}`, text: k.enabled ? 'enabled' : 'disabled'})),
      h('td', {class: 'nowrap', 'data-label': 'Created', text: when(k.created)}),
      h('td', {'data-label': 'Last used', text: k.last_used ? relative(k.last_used) : 'never', title: when(k.last_used)}),
      h('td', {class: 'num', 'data-label': 'Requests', dataset: {requests: k.total_requests}, text: num(k.total_requests)}),
      h('td', {class: 'num', 'data-label': 'Tokens in / out', text: `${compact(k.total_input)} / ${compact(k.total_output)}`}),
      h('td', {class: 'num', 'data-label': 'Errors', text: num(k.total_errors)}),
      showCost ? h('td', {class: 'num', 'data-label': 'Cost', text: cost === null ? '—' : usd(cost)}) : null,
      showPolicy ? h('td', {class: 'policy', 'data-label': 'Policy'}, policy.length
        ? h('ul', {class: 'plain'}, policy.map((p) => h('li', {text: p}))) : h('span', {class: 'muted', text: 'none'})) : null,
      h('td', {class: 'actions', 'data-label': 'Actions'},
        h('a', {class: 'btn small', href: `#/usage?key=${encodeURIComponent(k.id)}`, text: 'Usage', 'aria-label': `Usage of ${k.name}`}),
        h('button', {type: 'button', class: 'btn small', text: k.enabled ? 'Disable' : 'Enable', 'aria-label': `${k.enabled ? 'Disable' : 'Enable'} ${k.name}`,
          dataset: {action: k.enabled ? 'disable' : 'enable'}, on: {click: () => act(k, k.enabled ? 'disable' : 'enable')}}),
        h('button', {type: 'button', class: 'btn small danger', text: 'Delete', 'aria-label': `Delete ${k.name}`,
          dataset: {action: 'delete'}, on: {click: () => act(k, 'delete')}})));
  }

  /*
   * Where the focus is in the table (row id and which of its controls), to put it back
   * after a redraw: the list refreshes itself, and a keyboard user must not lose their
   * place. A Disable button that became Enable keeps the focus; a deleted row hands it
   * to the filter.
   */
  const controls = (tr) => [...tr.querySelectorAll('a, button')];

  function focusSpot() {
    const el = document.activeElement;
    const tr = el && table.contains(el) ? el.closest('tr[data-id]') : null;
    return tr ? {id: tr.dataset.id, index: controls(tr).indexOf(el)} : null;
  }

  function refocus(spot) {
    if (!spot) return;
    const tr = table.querySelector(`tr[data-id="${CSS.escape(spot.id)}"]`);
    ((tr && controls(tr)[spot.index]) || filter).focus();
  }

  function draw() {
    const spot = focusSpot();
    const q = filter.value.trim().toLowerCase();
    const shown = keys.filter((k) => !q || k.name.toLowerCase().includes(q) || k.id.includes(q) || k.key.toLowerCase().includes(q));
    const showPolicy = keys.some((k) => k.policy !== undefined);
    const showCost = keys.some((k) => costOf(k) > 0); // cost_usd is always given; 0 everywhere = nothing priced
    count.textContent = `${keys.length} key${keys.length === 1 ? '' : 's'}, ${keys.filter((k) => k.enabled).length} enabled`;
    if (!keys.length) {
      fill(table, h('p', {class: 'muted', text: 'No keys yet: create one above.'}));
      return;
    }
    const cols = ['Name', 'Key', 'Status', 'Created', 'Last used', 'Requests', 'Tokens in / out', 'Errors',
      showCost ? 'Cost' : null, showPolicy ? 'Policy' : null, 'Actions'].filter(Boolean);
    fill(table, h('div', {class: 'table-wrap'}, h('table', {class: 'grid-table keys'},
      thead(cols, ['Requests', 'Tokens in / out', 'Errors', 'Cost']),
      h('tbody', {}, shown.map((k) => row(k, showPolicy, showCost))))),
    shown.length ? null : h('p', {class: 'muted', text: 'No key matches the filter.'}));
    refocus(spot);
  }

  /*
   * Re-reads the list. A call made while a read is under way (a change right after a
   * refresh started) reads again once it ends, so what it awaits is never older than
   * the change.
   */
  function load() {
    if (loading) {
      again = true;
      return loading;
    }
    loading = (async () => {
      do {
        again = false;
        try {
          const doc = await get('keys');
          keys = doc.keys;
          if (alive) draw();
        } catch (e) {
          app.fail(e);
        }
      } while (again && alive);
      loading = null;
    })();
    return loading;
  }

  function tick() {
    // Not under an open dialog (it names a key of the current list).
    if (!document.hidden && !dialog.open) load();
    timer = setTimeout(tick, REFRESH_MS);
  }

  load();
  timer = setTimeout(tick, REFRESH_MS);
  nameInput.focus();
  return () => {
    alive = false;
    clearTimeout(timer);
    if (dialog.open) dialog.close();
  };
}
