// The console's entry point: a router over location.pathname (so deep links
// work on reload) that renders one page into <main>, in-app navigation with
// the History API, and the search box.
import {api, ApiError, isUUID, orderHref, customerHref} from './dom.js';
import * as live from './live.js';
import * as aggregate from './aggregate.js';
import * as deadLetters from './deadletters.js';
import * as token from './token.js';

const main = document.getElementById('main');

// routes: a path pattern, the page module, and the nav section it is in.
const routes = [
  {re: /^\/console\/?$/, page: live, section: 'live', params: () => ({})},
  {re: /^\/console\/orders\/([^/]+)\/?$/, page: aggregate, section: null, params: m => ({type: 'Order', id: m[1]})},
  {re: /^\/console\/customers\/([^/]+)\/?$/, page: aggregate, section: null, params: m => ({type: 'Customer', id: m[1]})},
  {re: /^\/console\/dead-letters\/?$/, page: deadLetters, section: 'dead-letters', params: () => ({})},
  {re: /^\/console\/token\/?$/, page: token, section: 'token', params: () => ({})},
];

let leave = null;      // ends the page shown: closes its stream, stops its timers
let controller = null; // aborts the page's requests in flight

function render({focus = false} = {}) {
  leave?.();
  controller?.abort();
  controller = new AbortController();
  const path = location.pathname;
  let route = null, m = null;
  for (const r of routes) {
    if ((m = path.match(r.re))) { route = r; break; }
  }
  for (const a of document.querySelectorAll('nav a[data-section]')) {
    if (route && a.dataset.section === route.section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!route) {
    const h1 = document.createElement('h1');
    h1.textContent = 'Not found';
    const p = document.createElement('p');
    p.textContent = 'The console has no page at ' + path + '.';
    main.append(h1, p);
    leave = null;
  } else {
    let params = route.params(m);
    if (params.id) params = {...params, id: decodeURIComponent(params.id)};
    leave = route.page.render(main, params, {signal: controller.signal, navigate}) || null;
  }
  // After a navigation, move focus to the new page's heading, so keyboard
  // and screen reader users start there (not on the initial load).
  if (focus) {
    const h1 = main.querySelector('h1');
    if (h1) { h1.tabIndex = -1; h1.focus(); } else main.focus();
  }
}

// navigate shows path without a page load.
export function navigate(path, {replace = false} = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render({focus: true});
}

// In-app links carry data-nav; a click with a modifier opens a new tab as usual.
document.addEventListener('click', e => {
  const a = e.target.closest?.('a[data-nav]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', () => render({focus: true}));

// Search: an id is an order's or a customer's; the event store says which
// (it answers at once, even before the read models have the aggregate).
const form = document.getElementById('search');
const input = document.getElementById('search-id');
const status = document.getElementById('search-status');
form.addEventListener('submit', async e => {
  e.preventDefault();
  const id = input.value.trim();
  status.textContent = '';
  if (!isUUID(id)) {
    status.textContent = 'An id is a UUID, such as 01a214d1-0889-78c3-a78d-b3683e782127.';
    return;
  }
  for (const [path, href] of [[`/v1/orders/${id}/events`, orderHref(id)], [`/v1/customers/${id}/events`, customerHref(id)]]) {
    try {
      await api(path);
      status.textContent = '';
      navigate(href);
      return;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) {
        status.textContent = 'Search failed: ' + err.message;
        return;
      }
    }
  }
  status.textContent = 'No order or customer has id ' + id + '.';
});

render();
