// The page of one order or customer: its current state, time travel
// through its versions with what changed at each, and its event timeline,
// read a page at a time: a history of thousands of events is not fetched,
// nor drawn, until asked for.
import {h, api, historyPage, ApiError, replace, link, orderHref, customerHref, aggregateHref, time, timeEl, isTimeField, json, message} from './dom.js';

const PATHS = {Order: '/v1/orders/', Customer: '/v1/customers/'};

// PAGE is how many events the timeline fetches and draws at a time.
const PAGE = 100;

export function render(main, {type, id}, {signal}) {
  const base = PATHS[type] + encodeURIComponent(id);
  const noun = type.toLowerCase();
  const q = new URLSearchParams(location.search);
  const correlation = q.get('correlation');

  const stateEl = h('div', {}, message('info', 'Loading…'));
  const travelEl = h('div');
  const timelineEl = h('div');
  const relatedEl = h('div');
  main.append(
    h('h1', {}, `${type} `, h('code', {class: 'id'}, id)),
    h('section', {'aria-labelledby': 'state-h'}, h('h2', {id: 'state-h'}, 'Current state'), stateEl),
    relatedEl,
    h('section', {'aria-labelledby': 'travel-h'}, h('h2', {id: 'travel-h'}, 'Time travel'), travelEl),
    h('section', {'aria-labelledby': 'timeline-h'}, h('h2', {id: 'timeline-h'}, 'Event timeline'), timelineEl),
  );

  (async () => {
    let first;
    try {
      first = await historyPage(`${base}/events?limit=${PAGE}`, {signal});
    } catch (err) {
      if (signal.aborted) return;
      replace(stateEl, message('error', err instanceof ApiError && err.status === 404 ? `No ${noun} has id ${id}.` : `Could not load the ${noun}: ${err.message}`));
      return;
    }
    // events grows as pages are loaded; latest is the version when the
    // page opened (the ETag), whatever is loaded.
    const events = first.events;
    const latest = first.version;
    // The read model, at least at the version the store has: read-your-writes.
    api(`${base}?min_version=${latest}`, {signal})
      .then(state => replace(stateEl, stateView(type, state)))
      .catch(err => { if (!signal.aborted) replace(stateEl, message('error', 'Could not load the current state: ' + err.message)); });

    // The timeline first: time travel marks the version it shows there.
    const travelTo = v => { travel.show(v); travelEl.querySelector('input')?.focus(); };
    const list = h('ol', {class: 'timeline', id: 'timeline', 'data-testid': 'timeline'}, events.map(e => eventItem(e, correlation, travelTo)));
    replace(timelineEl, list);
    const travel = timeTravel(travelEl, base, events, latest, signal);
    const related = correlation ? correlated(relatedEl, type, events, correlation, signal) : null;
    timelineEl.append(more(first.next, events, latest, signal, page => {
      list.append(...page.map(e => eventItem(e, correlation, travelTo)));
      travel.mark();
      related?.refresh();
    }));
    if (type === 'Customer') customerOrders(relatedEl, base, signal);
  })();
}

// more is the end of the timeline: how many events are shown and, while
// more follow, a button that fetches the next page (next, the Link of the
// last page read), adds its events to events and hands them to drawn.
function more(next, events, latest, signal, drawn) {
  const status = h('p', {role: 'status', 'data-testid': 'timeline-status'});
  const button = h('button', {type: 'button', class: 'secondary', 'aria-controls': 'timeline'}, 'Load more events');
  const el = h('div', {class: 'more'}, status, button);
  const update = () => {
    status.textContent = next ? `Showing events 1 to ${events.length} of ${latest}.` : `All ${events.length} events shown.`;
    button.hidden = !next;
  };
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const page = await historyPage(next, {signal});
      next = page.next;
      events.push(...page.events);
      drawn(page.events);
      update();
    } catch (err) {
      if (!signal.aborted) status.textContent = 'Could not load more events: ' + err.message;
    } finally {
      button.disabled = false;
    }
  });
  update();
  return el;
}

// stateView shows a read model row as a list of fields.
function stateView(type, s) {
  const rows = Object.entries(s).map(([k, v]) => {
    let value = fieldText(k, v);
    if (k === 'customer_id' && v) value = link(customerHref(v), v);
    return [h('dt', {}, k), h('dd', {}, value)];
  });
  return h('dl', {class: 'fields', 'data-testid': 'current-state'}, rows);
}

// fieldText shows the value of field k; a time as every time is shown.
function fieldText(k, v) {
  if (v === null || v === undefined) return h('span', {class: 'null'}, 'null');
  if (isTimeField(k, v)) return timeEl(v);
  if (typeof v === 'object') return h('pre', {}, json(v));
  return String(v);
}

// timeTravel shows the state at one version (?as_of_version, folded from
// the event store) and what changed from the version before. The version
// is kept in the URL (?version=N), so the view can be linked.
function timeTravel(el, base, events, latest, signal) {
  const cache = new Map(); // version -> Promise of the state
  const stateAt = v => {
    if (!cache.has(v)) cache.set(v, api(`${base}?as_of_version=${v}`, {signal}));
    return cache.get(v);
  };
  const wanted = Number(new URLSearchParams(location.search).get('version'));
  let version = Number.isInteger(wanted) && wanted >= 1 && wanted <= latest ? wanted : latest;

  const slider = h('input', {type: 'range', id: 'version', min: 1, max: latest, step: 1, value: version,
    'aria-describedby': 'version-out'});
  const prev = h('button', {type: 'button', 'aria-controls': 'travel-view'}, '◀ Previous version');
  const next = h('button', {type: 'button', 'aria-controls': 'travel-view'}, 'Next version ▶');
  const out = h('output', {id: 'version-out', for: 'version', 'aria-live': 'polite'});
  const view = h('div', {id: 'travel-view'});
  replace(el,
    h('div', {class: 'stepper'},
      h('label', {for: 'version'}, 'Version'), slider, prev, next),
    out, view);

  let shown = 0; // guards against an older answer drawn over a newer one
  // show draws version v; moved (by the user) keeps it in the URL.
  async function show(v, moved = true) {
    version = Math.min(Math.max(1, v), latest);
    slider.value = version;
    prev.disabled = version <= 1;
    next.disabled = version >= latest;
    const e = events.find(x => x.sequence === version);
    out.textContent = `Version ${version} of ${latest}` + (e ? ` — ${e.event_type} at ${time(e.timestamp)}` : '');
    if (moved) {
      const url = new URL(location.href);
      url.searchParams.set('version', version);
      history.replaceState(null, '', url);
    }
    mark();
    const n = ++shown;
    try {
      const [before, after] = await Promise.all([version > 1 ? stateAt(version - 1) : null, stateAt(version)]);
      if (n !== shown) return;
      replace(view, changes(before, after, version), h('h3', {}, `State at version ${version}`),
        h('pre', {class: 'state', 'data-testid': 'state-at-version'}, json(after)));
    } catch (err) {
      if (n === shown && !signal.aborted) replace(view, message('error', 'Could not load that version: ' + err.message));
    }
  }
  // A range input fires "input" while dragged: the state is fetched on
  // "change" (release, or each arrow key), and each version once.
  slider.addEventListener('change', () => show(Number(slider.value)));
  prev.addEventListener('click', () => show(version - 1));
  next.addEventListener('click', () => show(version + 1));
  // mark marks the version shown in the timeline, as far as it is loaded.
  function mark() {
    for (const li of document.querySelectorAll('.timeline > li')) {
      li.classList.toggle('current', Number(li.dataset.version) === version);
    }
  }
  show(version, false);
  return {show, mark};
}

// changes is the table of fields that differ between two states (the
// version number itself aside).
function changes(before, after, version) {
  const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after)])].filter(k => k !== 'version');
  const changed = keys.filter(k => JSON.stringify(before?.[k]) !== JSON.stringify(after[k]));
  const caption = version === 1 ? 'Version 1: the fields as created' : `Changed from version ${version - 1}`;
  if (!changed.length) return message('info', `${caption}: nothing.`);
  return h('table', {class: 'diff', 'data-testid': 'changes'},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Field'), h('th', {scope: 'col'}, 'Before'), h('th', {scope: 'col'}, 'After'))),
    h('tbody', {}, changed.map(k => h('tr', {},
      h('th', {scope: 'row'}, k),
      h('td', {class: 'before'}, before ? fieldText(k, before[k]) : '—'),
      h('td', {class: 'after'}, fieldText(k, after[k]))))));
}

// eventItem is one event of the timeline, which lists them oldest first.
// Its correlation id links to the events that share it; with a correlation
// given, the others are dimmed.
function eventItem(e, correlation, travelTo) {
  const related = new URL(location.href);
  related.searchParams.set('correlation', e.correlation_id);
  related.searchParams.delete('version');
  return h('li', {'data-version': e.sequence, class: correlation && e.correlation_id !== correlation ? 'dim' : null},
    h('h3', {}, e.event_type),
    h('dl', {class: 'meta'},
      h('dt', {}, 'Sequence'), h('dd', {class: 'sequence'}, String(e.sequence)),
      h('dt', {}, 'Schema version'), h('dd', {}, String(e.event_version)),
      h('dt', {}, 'Time'), h('dd', {}, timeEl(e.timestamp)),
      h('dt', {}, 'Correlation id'), h('dd', {}, link(related.pathname + related.search, e.correlation_id),
        h('span', {class: 'visually-hidden'}, ' (show related events)')),
      h('dt', {}, 'Causation id'), h('dd', {}, h('code', {}, e.causation_id)),
      h('dt', {}, 'Event id'), h('dd', {}, h('code', {}, e.event_id)),
      e.metadata?.command ? [h('dt', {}, 'Command'), h('dd', {}, e.metadata.command)] : null,
      traceRow(e.metadata?.traceparent)),
    h('details', {}, h('summary', {}, 'Payload'), h('pre', {}, json(e.data))),
    h('button', {type: 'button', class: 'link', onclick: () => travelTo(e.sequence)}, `State at version ${e.sequence}`));
}

// traceRow shows the trace id of an event's traceparent (W3C: version,
// trace id, parent id, flags), linked to the trace UI when orderd was
// given one (-trace-ui-url, in the page's meta element); none for an
// event stored without one.
function traceRow(traceparent) {
  const id = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent || '')?.[1];
  if (!id) return null;
  const template = document.querySelector('meta[name="orderd-trace-url"]')?.content;
  const code = h('code', {'data-testid': 'trace-id'}, id);
  const value = template
    ? h('a', {href: template.replaceAll('{trace_id}', id), target: '_blank', rel: 'noopener noreferrer'}, code)
    : code;
  return [h('dt', {}, 'Trace id'), h('dd', {}, value)];
}

// correlated lists the events that share a correlation id: this
// aggregate's, as far as its timeline is loaded (refresh lists them again
// when it grows), and, for an order, its customer's, from the first 1,000
// of them. (The store has no index by correlation, so those are the
// aggregates the console looks in.)
function correlated(el, type, events, correlation, signal) {
  const list = h('ul', {class: 'related', 'data-testid': 'correlated'});
  el.append(h('section', {'aria-labelledby': 'corr-h'},
    h('h2', {id: 'corr-h'}, 'Events with correlation id ', h('code', {}, correlation)),
    h('p', {}, link(location.pathname, 'Show all events')), list));
  let customer = [];
  const refresh = () => {
    const found = [...events, ...customer].filter(e => e.correlation_id === correlation);
    found.sort((a, b) => a.timestamp.localeCompare(b.timestamp));
    replace(list, found.map(e =>
      h('li', {}, `${e.event_type} (sequence ${e.sequence}) of `, link(aggregateHref(e.aggregate_type, e.aggregate_id), `${e.aggregate_type} ${e.aggregate_id}`),
        ` at ${time(e.timestamp)}`)));
  };
  (async () => {
    if (type === 'Order' && events[0]?.data?.customer_id) {
      try {
        customer = (await api(`/v1/customers/${encodeURIComponent(events[0].data.customer_id)}/events?limit=1000`, {signal})).events;
      } catch { /* the order's own events still show */ }
    }
    refresh();
  })();
  return {refresh};
}

// customerOrders lists a customer's orders (the first 100).
async function customerOrders(el, base, signal) {
  const section = h('section', {'aria-labelledby': 'orders-h'}, h('h2', {id: 'orders-h'}, 'Orders'));
  el.append(section);
  try {
    const page = await api(base + '/orders?limit=100', {signal});
    if (!page.orders.length) { section.append(message('info', 'No orders yet.')); return; }
    section.append(h('table', {class: 'orders', 'data-testid': 'customer-orders'},
      h('thead', {}, h('tr', {}, ['Order', 'Status', 'Items', 'Quantity', 'Version', 'Updated'].map(t => h('th', {scope: 'col'}, t)))),
      h('tbody', {}, page.orders.map(o => h('tr', {'data-id': o.id},
        h('td', {}, link(orderHref(o.id), o.id)), h('td', {}, o.status),
        h('td', {class: 'items'}, String(o.item_count)), h('td', {class: 'quantity'}, String(o.quantity)),
        h('td', {}, String(o.version)), h('td', {}, timeEl(o.updated_at)))))));
    if (page.next_after) section.append(h('p', {}, 'Showing the first 100 orders.'));
  } catch (err) {
    if (!signal.aborted) section.append(message('error', 'Could not load the orders: ' + err.message));
  }
}
