// Formatting numbers, times and CSV. Times from the API are ISO strings in the
// proxy's USAGE_TZ; they are shown in that offset (like the usage buckets),
// not converted to the browser's zone.

const int = new Intl.NumberFormat(undefined, {maximumFractionDigits: 0});
const compactFmt = new Intl.NumberFormat(undefined, {notation: 'compact', maximumFractionDigits: 1});
const usdFmt = new Intl.NumberFormat(undefined, {style: 'currency', currency: 'USD', maximumFractionDigits: 4});

export const num = (n) => int.format(Number(n) || 0);
export const compact = (n) => compactFmt.format(Number(n) || 0);
export const usd = (n) => usdFmt.format(Number(n) || 0);

/** "2026-02-11T10:00:00+08:00" -> "2026-02-11 10:00"; "" for null. */
export function when(iso) {
  if (!iso) return '';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return m ? `${m[1]} ${m[2]}` : String(iso);
}

/** A duration in seconds as "45 s", "12 min", "3 h 5 min", "4 d 2 h". */
export function duration(sec) {
  sec = Math.max(0, Math.round(Number(sec) || 0));
  if (sec < 60) return `${sec} s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min} min`;
  const hr = Math.floor(min / 60);
  if (hr < 48) return min % 60 ? `${hr} h ${min % 60} min` : `${hr} h`;
  const d = Math.floor(hr / 24);
  return hr % 24 ? `${d} d ${hr % 24} h` : `${d} d`;
}

/** Seconds from now until an ISO time (negative: past), or null. */
export function secondsUntil(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : (t - Date.now()) / 1000;
}

/** "in 5 min" / "5 min ago" for an ISO time. */
export function relative(iso) {
  const s = secondsUntil(iso);
  if (s === null) return '';
  return s >= 0 ? `in ${duration(s)}` : `${duration(-s)} ago`;
}

/** YYYY-MM-DD plus n days. */
export function addDays(day, n) {
  const t = Date.parse(`${day}T00:00:00Z`) + n * 86400000;
  return new Date(t).toISOString().slice(0, 10);
}

/** Every day from..to, inclusive. */
export function daysBetween(from, to) {
  const out = [];
  for (let d = from; d <= to && out.length < 5000; d = addDays(d, 1)) out.push(d);
  return out;
}

/*
 * One CSV field (RFC 4180). A cell that a spreadsheet would read as a formula
 * (=, +, -, @, tab, CR at the start) gets a leading apostrophe: key names are
 * user input, and CSV files end up in spreadsheets.
 */
function csvField(v) {
  let t = v === null || v === undefined ? '' : String(v);
  if (typeof v !== 'number' && /^[=+\-@\t\r]/.test(t)) t = `'${t}`;
  return /[",\r\n]/.test(t) ? `"${t.replaceAll('"', '""')}"` : t;
}

export function csv(header, rows) {
  return [header, ...rows].map((r) => r.map(csvField).join(',')).join('\r\n') + '\r\n';
}
