// Small DOM and HTTP helpers shared by the pages. Data from the server is
// only ever put in the page as text (textContent, attribute values), never
// parsed as markup.

// h builds an element: h('a', {href: '/x', class: 'c'}, 'text', child, …).
// Attributes whose value is null, undefined or false are left out; "on…"
// attributes take a listener; children that are strings become text nodes.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// replace empties el and fills it with children.
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// link is an in-app link: the router handles it without a page load.
export function link(href, ...children) {
  return h('a', {href, 'data-nav': true}, ...children);
}

export function orderHref(id) { return '/console/orders/' + encodeURIComponent(id); }
export function customerHref(id) { return '/console/customers/' + encodeURIComponent(id); }
export function aggregateHref(type, id) {
  return type === 'Customer' ? customerHref(id) : orderHref(id);
}

// ApiError is a failed answer; problem is its RFC 9457 body when it had one.
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

// bearer is the access token the user pasted on the Token page, sent with
// every API call when orderd asks for tokens (ORDERD_OIDC_ISSUER). Like
// the admin token it lives in this module's memory only: never in a URL, a
// cookie or storage, so a reload forgets it.
let bearer = '';
export function setBearer(t) { bearer = t; }
export function getBearer() { return bearer; }

// authHeaders are the headers that carry token, else the pasted bearer.
export function authHeaders(token) {
  const t = token || bearer;
  return t ? {Authorization: 'Bearer ' + t} : {};
}

// api fetches a JSON answer from orderd. It throws ApiError on any status
// but 2xx, with the problem document when the server sent one. token (the
// admin token) replaces the pasted bearer token for this call.
export async function api(path, options) {
  return (await request(path, options)).body;
}

// historyPage fetches one page of an aggregate's history: its events, the
// aggregate's version (the ETag) and the URL of the next page (the Link
// header's rel="next"), null on the last page.
export async function historyPage(path, {signal} = {}) {
  const {body, headers} = await request(path, {signal});
  const next = /^<([^>]+)>;\s*rel="next"$/.exec(headers.get('Link') || '');
  return {events: body.events, version: Number(JSON.parse(headers.get('ETag'))), next: next ? next[1] : null};
}

async function request(path, {method = 'GET', token, signal} = {}) {
  // Tokens travel in a header only, never in a URL.
  const headers = {Accept: 'application/json', ...authHeaders(token)};
  const res = await fetch(path, {method, headers, signal, cache: 'no-store'});
  const type = res.headers.get('Content-Type') || '';
  const body = type.includes('json') ? await res.json().catch(() => null) : null;
  if (!res.ok) throw new ApiError(res.status, body);
  return {body, headers: res.headers};
}

// time formats an RFC 3339 time for people: the one format of every time
// the console shows. In their time zone, year first whatever the locale
// (2024-11-05 10:00:00.000), to the millisecond (events of one command
// share a millisecond often enough).
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n, width = 2) => String(n).padStart(width, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

// timeEl is a time as an element: time(iso) as its text, the instant in
// datetime, and the server's UTC text in its tooltip.
export function timeEl(iso) {
  return iso ? h('time', {datetime: iso, title: iso}, time(iso)) : time(iso);
}

// isTimeField tells the fields of a state that hold a time (created_at,
// updated_at, registered_at, …): shown with time, like every other time.
export function isTimeField(name, v) { return typeof v === 'string' && name.endsWith('_at'); }

// eventNumbers labels an event's two numbers: its sequence (the
// aggregate's version after it) and the schema version of its data.
export function eventNumbers(e) { return `sequence ${e.sequence} · schema version ${e.event_version}`; }

// json shows a value as indented JSON text.
export function json(v) { return JSON.stringify(v, null, 2); }

// message is a status line: kind is 'info', 'ok' or 'error'.
export function message(kind, text) {
  return h('p', {class: 'msg msg-' + kind, role: kind === 'error' ? 'alert' : 'status'}, text);
}

// isUUID tells an id worth asking the server about.
export function isUUID(s) {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
}
