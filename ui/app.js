// The console's entry point: sign-in, the three views and the hash router
// (#/overview, #/keys, #/usage?...). Each view module exports
// mount(container, app) and returns a function that unmounts it (stops its
// timers). Nothing here is kept beyond the tab: the admin key lives in
// sessionStorage and is removed on sign-out.

import {ApiError, api, session} from './api.js';
import * as overview from './overview.js';
import * as keys from './keys.js';
import * as usage from './usage.js';

const VIEWS = {overview, keys, usage};
const $ = (id) => document.getElementById(id);

let unmount = null;

const app = {
  /** Shows a short line in the header (kind: "ok", "error" or ""). */
  status(text, kind = '') {
    const el = $('status');
    el.textContent = text;
    el.className = `status ${kind}`;
  },
  /** Handles a failed call: a refused key signs out, anything else is shown. */
  fail(err) {
    if (err instanceof ApiError && err.auth) {
      signOut('The admin key was refused (has it changed?). Sign in again.');
    } else {
      app.status(err.message || String(err), 'error');
    }
  },
  /** Route parameters of the current hash (#/usage?from=...). */
  params() {
    const q = location.hash.split('?')[1] || '';
    return new URLSearchParams(q);
  },
  /** Replaces the current route's parameters without reloading the view. */
  setParams(params) {
    const view = currentView();
    history.replaceState(null, '', `#/${view}${params.toString() ? `?${params}` : ''}`);
  },
};

function currentView() {
  const m = /^#\/([a-z]+)/.exec(location.hash);
  return m && VIEWS[m[1]] ? m[1] : 'overview';
}

function route() {
  if (!session.key) return;
  const name = currentView();
  if (unmount) unmount();
  for (const a of document.querySelectorAll('#tabs a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = $('view');
  view.replaceChildren();
  view.dataset.view = name;
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · api-proxy console`;
  app.status('');
  unmount = VIEWS[name].mount(view, app);
}

function showSignedIn(on) {
  $('signin').hidden = on;
  $('tabs').hidden = !on;
  $('signout').hidden = !on;
  $('view').hidden = !on;
}

function signOut(message) {
  session.clear();
  if (unmount) unmount();
  unmount = null;
  $('view').replaceChildren();
  app.status('');
  showSignedIn(false);
  const err = $('signin-error');
  err.textContent = message || '';
  err.hidden = !message;
  const input = $('admin-key');
  input.value = '';
  input.focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const input = $('admin-key');
  const err = $('signin-error');
  const key = input.value.trim();
  err.hidden = true;
  if (!key) {
    err.textContent = 'Enter the admin key.';
    err.hidden = false;
    input.focus();
    return;
  }
  const button = ev.target.querySelector('button');
  button.disabled = true;
  try {
    // /admin/fallback is answered from memory: a right key signs in even while Redis is away.
    await api('GET', 'fallback', undefined, key);
    session.key = key;
    input.value = '';
    showSignedIn(true);
    route();
    $('main').focus();
  } catch (e) {
    err.textContent = e instanceof ApiError && e.auth ? 'Wrong admin key: the proxy refused it.'
      : e instanceof ApiError && e.status === 503 ? `The admin API is not available: ${e.message}`
        : e.message || String(e);
    err.hidden = false;
    input.select();
    input.focus();
  } finally {
    button.disabled = false;
  }
}

function start() {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', () => signOut(''));
  window.addEventListener('hashchange', route);
  if (session.key) {
    showSignedIn(true);
    route();
  } else {
    signOut('');
  }
}

start();
