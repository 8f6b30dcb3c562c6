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

// api fetches a JSON answer from orderd. It throws ApiError on any status
// but 2xx, with the problem document when the server sent one.
export async function api(path, {method = 'GET', token, signal} = {}) {
  const headers = {Accept: 'application/json'};
  // The admin token travels in a header only, never in a URL.
  if (token) headers.Authorization = 'Bearer ' + token;
  const res = await fetch(path, {method, headers, signal, cache: 'no-store'});
  const type = res.headers.get('Content-Type') || '';
  const body = type.includes('json') ? await res.json().catch(() => null) : null;
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

// time formats an RFC 3339 time for people, in their time zone, to the
// millisecond (events of one command share a millisecond often enough).
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3,
  });
}

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
