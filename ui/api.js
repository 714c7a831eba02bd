// The admin API, called with the admin key from sessionStorage (x-api-key).
// Paths are relative to the page (/ui/ -> ../admin/...), so the console also
// works behind a reverse proxy that mounts the gateway under a prefix.

const STORAGE = 'api-proxy-admin-key';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
  /** The key was refused (wrong, or changed since sign-in). */
  get auth() {
    return this.status === 401 || this.status === 403;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(STORAGE); },
  set key(k) { sessionStorage.setItem(STORAGE, k); },
  clear() { sessionStorage.removeItem(STORAGE); },
};

/** Calls the admin API; resolves with the JSON answer or throws ApiError. */
export async function api(method, path, body, key = session.key) {
  const headers = {'x-api-key': key || ''};
  const init = {method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer'};
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(new URL(`../admin/${path}`, document.baseURI), init);
  } catch {
    throw new ApiError(0, 'Cannot reach the proxy.');
  }
  let doc = null;
  try {
    doc = await res.json();
  } catch {
    // not JSON: an intermediary's error page
  }
  if (!res.ok) {
    const detail = doc && typeof doc.detail === 'string' ? doc.detail : `HTTP ${res.status}`;
    throw new ApiError(res.status, detail);
  }
  return doc;
}

/** GET path?query (query: an object; empty values left out). */
export function get(path, query = {}) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== ''));
  const qs = q.toString();
  return api('GET', qs ? `${path}?${qs}` : path);
}
