// The home page: the health of the store and the workers (from /readyz,
// every 5 s) and the live feed of events (one EventSource).
import {h, api, ApiError, replace, link, aggregateHref, timeEl, eventNumbers, message} from './dom.js';

// The stream names each SSE message after its event type, and EventSource
// has no wildcard listener, so the console lists the types it shows.
const EVENT_TYPES = [
  'OrderCreated', 'OrderItemsUpdated', 'OrderConfirmed', 'OrderShipped', 'OrderDelivered', 'OrderCancelled',
  'CustomerRegistered', 'CustomerEmailChanged', 'CustomerPhoneChanged',
];
const KEEP = 200;            // events kept in the feed (newest first)
const HEALTH_EVERY = 5000;   // ms between /readyz polls

export function render(main, _params, {signal}) {
  const healthBody = h('div', {class: 'health'}, message('info', 'Loading…'));
  const feedStatus = h('p', {class: 'status', role: 'status', id: 'feed-status'}, 'Connecting…');
  const more = h('button', {type: 'button', class: 'more', hidden: true});
  const list = h('ol', {class: 'feed', id: 'feed-list'});
  const scroller = h('div', {class: 'feed-scroll', tabindex: 0, role: 'region', 'aria-label': 'Events, newest first'}, list);
  main.append(
    h('h1', {}, 'Live'),
    h('section', {'aria-labelledby': 'health-h'}, h('h2', {id: 'health-h'}, 'Health'), healthBody),
    h('section', {'aria-labelledby': 'feed-h', class: 'feed-section'},
      h('h2', {id: 'feed-h'}, 'Event feed'), feedStatus, more, scroller),
  );

  const stopHealth = pollHealth(healthBody, signal);
  const stopFeed = follow({list, scroller, more, status: feedStatus}, signal);
  return () => { stopHealth(); stopFeed(); };
}

// pollHealth shows /readyz now and every HEALTH_EVERY ms while the page is
// visible; a poll starts only after the previous one ended.
function pollHealth(el, signal) {
  let timer = 0;
  const tick = async () => {
    if (!document.hidden) {
      try {
        showHealth(el, await api('/readyz', {signal}));
      } catch (err) {
        if (signal.aborted) return;
        // /readyz answers 503 with the same body when a component is down.
        if (err instanceof ApiError && err.problem?.components) showHealth(el, err.problem);
        else replace(el, message('error', 'Health unavailable: ' + err.message));
      }
    }
    if (!signal.aborted) timer = setTimeout(tick, HEALTH_EVERY);
  };
  tick();
  return () => clearTimeout(timer);
}

const COMPONENTS = [['store', 'Store'], ['projector', 'Projector'], ['relay', 'Relay'], ['dead_letters', 'Dead letters']];

function showHealth(el, ready) {
  const c = ready.components || {};
  const cards = COMPONENTS.map(([key, label]) => {
    const x = c[key];
    if (!x) return null;
    const rows = [['Status', h('span', {class: 'badge badge-' + x.status}, x.status)]];
    if (key === 'dead_letters') {
      rows.push(['Count', h('span', {'data-testid': 'dead-letter-count'}, String(x.lag ?? 0))]);
    } else {
      if (x.role) rows.push(['Role here', x.role]);
      if (x.active) rows.push(['Active instance', x.active]);
      if (x.lag != null) rows.push(['Lag', `${x.lag} event${x.lag === 1 ? '' : 's'}`]);
      if (x.lag_seconds != null) rows.push(['Lag (seconds)', x.lag_seconds.toFixed(1) + ' s']);
    }
    const breaker = key === 'relay' && /circuit breaker (\S+)/.exec(x.detail || '');
    if (breaker) rows.push(['Breaker', breaker[1].replace(/;$/, '')]);
    if (x.detail) rows.push(['Detail', x.detail]);
    return h('article', {class: 'card', 'aria-labelledby': 'hc-' + key},
      h('h3', {id: 'hc-' + key}, key === 'dead_letters' ? link('/console/dead-letters', label) : label),
      h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  });
  replace(el,
    h('p', {class: 'overall'}, 'Service: ', h('span', {class: 'badge badge-' + (ready.status === 'ready' ? 'up' : 'down')}, ready.status)),
    h('div', {class: 'cards'}, cards));
}

// follow keeps one EventSource open on the stream and shows the newest
// KEEP events. While the user has scrolled down the feed, new events are
// counted, not inserted, so that what they read does not move.
function follow({list, scroller, more, status}, signal) {
  let shown = [];    // newest first, at most KEEP
  let pending = [];  // arrived while paused, newest first
  let frame = 0;
  let es = null;

  const paused = () => scroller.scrollTop > 4;
  const draw = () => {
    frame = 0;
    if (!paused() && pending.length) {
      shown = pending.concat(shown).slice(0, KEEP);
      pending = [];
    }
    more.hidden = pending.length === 0;
    more.textContent = `${pending.length} new event${pending.length === 1 ? '' : 's'} — show`;
    list.replaceChildren(...shown.map(eventItem));
  };
  // Events of a burst (a catch-up from the store, a busy minute) are drawn
  // once per frame, not once each.
  const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };
  const onEvent = msg => {
    let e;
    try { e = JSON.parse(msg.data); } catch { return; }
    pending.unshift(e);
    if (pending.length > KEEP) pending.length = KEEP;
    if (paused()) { // only the counter changes
      more.hidden = false;
      more.textContent = `${pending.length} new event${pending.length === 1 ? '' : 's'} — show`;
    } else schedule();
  };
  more.addEventListener('click', () => { scroller.scrollTop = 0; draw(); scroller.focus(); });
  scroller.addEventListener('scroll', () => { if (!paused() && pending.length) schedule(); });

  // The stream is not offered on every backend (CQL answers 501); a HEAD
  // asks without opening a stream, since EventSource hides the status.
  fetch('/v1/events/stream', {method: 'HEAD', signal}).then(res => {
    if (signal.aborted) return;
    if (res.status === 501) {
      status.textContent = 'This store offers no live stream of all events (the CQL backend keeps no global order). ' +
        "Open an order or a customer to see its events, or consume the Kafka topics.";
      status.classList.add('msg-info');
      return;
    }
    if (!res.ok) {
      status.textContent = `The event stream is unavailable (HTTP ${res.status}).`;
      return;
    }
    // Only what happens from now on: the stream names the head first, so
    // that EventSource's reconnections (with Last-Event-ID) leave no gap.
    es = new EventSource('/v1/events/stream?after=now');
    for (const t of EVENT_TYPES) es.addEventListener(t, onEvent);
    es.onopen = () => { status.textContent = 'Live: connected to the event stream.'; };
    // EventSource reconnects by itself, resuming with Last-Event-ID.
    es.onerror = () => {
      status.textContent = es.readyState === EventSource.CLOSED ? 'The event stream closed.' : 'Reconnecting to the event stream…';
    };
  }).catch(err => { if (!signal.aborted) status.textContent = 'The event stream is unavailable: ' + err.message; });

  return () => { es?.close(); if (frame) cancelAnimationFrame(frame); };
}

function eventItem(e) {
  return h('li', {class: 'event', 'data-position': e.position},
    h('span', {class: 'type'}, e.event_type),
    ' ',
    link(aggregateHref(e.aggregate_type, e.aggregate_id), `${e.aggregate_type} ${e.aggregate_id}`),
    h('span', {class: 'meta'}, ` ${eventNumbers(e)} · position ${e.position} · `, timeEl(e.timestamp)));
}
