// The home page: the health of the store and the workers (from /readyz,
// every 5 s) and the live feed of events (one EventSource).
import {h, api, ApiError, replace, link, aggregateHref, timeEl, eventNumbers, message, authHeaders, getBearer} from './dom.js';

// The stream names each SSE message after its event type, and EventSource
// has no wildcard listener, so the console lists the types it shows.
const EVENT_TYPES = [
  'OrderCreated', 'OrderItemsUpdated', 'OrderConfirmed', 'OrderShipped', 'OrderDelivered', 'OrderCancelled',
  'CustomerRegistered', 'CustomerEmailChanged', 'CustomerPhoneChanged',
];
const KEEP = 200;            // events kept in the feed (newest first)
const EARLIER = 50;          // events from before the page opened, at most
const LOOK_BACK = 200;       // positions read back for them (the store's own events take some)
const HEALTH_EVERY = 5000;   // ms between /readyz polls

export function render(main, _params, {signal}) {
  const healthBody = h('div', {class: 'health'}, message('info', 'Loading…'));
  const feedStatus = h('p', {class: 'status', role: 'status', id: 'feed-status'}, 'Connecting…');
  const more = h('button', {type: 'button', class: 'more', hidden: true});
  const list = h('ol', {class: 'feed', id: 'feed-list'});
  const empty = h('p', {class: 'empty', hidden: true}, 'No events yet: they appear here as they are committed.');
  const scroller = h('div', {class: 'feed-scroll', tabindex: 0, role: 'region', 'aria-label': 'Events, newest first'}, list, empty);
  main.append(
    h('h1', {}, 'Live'),
    h('section', {'aria-labelledby': 'health-h'}, h('h2', {id: 'health-h'}, 'Health'), healthBody),
    h('section', {'aria-labelledby': 'feed-h', class: 'feed-section'},
      h('h2', {id: 'feed-h'}, 'Event feed'), feedStatus, more, scroller),
  );

  const stopHealth = pollHealth(healthBody, signal);
  const stopFeed = follow({list, empty, scroller, more, status: feedStatus}, signal);
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

const COMPONENTS = [['store', 'Store'], ['projector', 'Projector'], ['relay', 'Relay'], ['rebuilder', 'Rebuilds'], ['dead_letters', 'Dead letters']];

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
      if (x.shards) rows.push(['Shards here', `${x.held ?? 0} of ${x.shards.length}`]);
    }
    const breaker = key === 'relay' && /circuit breaker (\S+)/.exec(x.detail || '');
    if (breaker) rows.push(['Breaker', breaker[1].replace(/;$/, '')]);
    if (x.detail) rows.push(['Detail', x.detail]);
    return h('article', {class: 'card', 'aria-labelledby': 'hc-' + key},
      h('h3', {id: 'hc-' + key}, key === 'dead_letters' ? link('/console/dead-letters', label) : label),
      h('dl', {}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      x.shards ? shardTable(key, x.shards) : null);
  });
  replace(el,
    h('p', {class: 'overall'}, 'Service: ', h('span', {class: 'badge badge-' + (ready.status === 'ready' ? 'up' : 'down')}, ready.status)),
    h('div', {class: 'cards'}, cards));
}

// shardTable shows which instance holds which shards of a worker split
// into shards, as this instance's balancer last saw them: one row per
// holder (this instance's marked), the shards nobody holds last.
function shardTable(key, shards) {
  const by = new Map();
  for (const s of shards) {
    const who = s.holder || '';
    if (!by.has(who)) by.set(who, []);
    by.get(who).push(s);
  }
  const holders = [...by.keys()].sort((a, b) => (a === '') - (b === '') || a.localeCompare(b));
  return h('table', {class: 'shards', 'data-testid': 'shards-' + key},
    h('thead', {}, h('tr', {}, h('th', {}, 'Instance'), h('th', {}, 'Shards'), h('th', {}, 'Count'))),
    h('tbody', {}, holders.map(who => {
      const list = by.get(who);
      const here = list.some(s => s.here);
      return h('tr', {},
        h('td', {}, who === '' ? '(none)' : who + (here ? ' (this instance)' : '')),
        h('td', {}, list.map(s => s.shard).join(', ')),
        h('td', {}, String(list.length)));
    })));
}

// follow shows the newest events: up to EARLIER of those committed before
// the page opened, then the new ones live, from one EventSource, keeping
// the newest KEEP. While the user has scrolled down the feed, new events
// are counted, not inserted, so that what they read does not move.
function follow({list, empty, scroller, more, status}, signal) {
  let shown = [];    // newest first, at most KEEP
  let pending = [];  // arrived while paused, newest first
  let head = 0;      // the newest position when the page opened
  let last = -1;     // the position of the last event received
  let earlier = 0;   // events at or before head, kept
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
    empty.hidden = head > 0 || shown.length > 0;
  };
  // Events of a burst (the earlier events, a busy minute) are drawn once
  // per frame, not once each.
  const schedule = () => { if (!frame) frame = requestAnimationFrame(draw); };
  const onEvent = msg => {
    let e;
    try { e = JSON.parse(msg.data); } catch { return; }
    // Positions increase along the stream, and a reconnection resumes
    // after the last one (Last-Event-ID): an event is never shown twice.
    if (!(e.position > last)) return;
    last = e.position;
    pending.unshift(e);
    if (pending.length > KEEP) pending.length = KEEP;
    // Of the events from before the page opened, the newest EARLIER: they
    // come first, so the oldest event held is one of them.
    if (e.position <= head && ++earlier > EARLIER) {
      (shown.length ? shown : pending).pop();
      earlier--;
    }
    if (paused()) { // only the counter changes
      more.hidden = false;
      more.textContent = `${pending.length} new event${pending.length === 1 ? '' : 's'} — show`;
    } else schedule();
  };
  more.addEventListener('click', () => { scroller.scrollTop = 0; draw(); scroller.focus(); });
  scroller.addEventListener('scroll', () => { if (!paused() && pending.length) schedule(); });

  streamHead(signal).then(res => {
    if (signal.aborted) return;
    // The stream is not offered on every backend: CQL, which orders events
    // per aggregate only, answers 501 and has no positions to start from.
    if (res.status === 501) {
      status.textContent = 'This store offers no live stream of all events (the CQL backend keeps no global order). ' +
        "Open an order or a customer to see its events, or consume the Kafka topics.";
      status.classList.add('msg-info');
      return;
    }
    if (res.head == null) {
      status.textContent = `The event stream is unavailable (HTTP ${res.status}).`;
      return;
    }
    // One stream from a little before the head: the store's events up to
    // it, then each new one as it is committed, with no gap or overlap
    // between the two (the server hands over from store to live), and
    // EventSource's reconnections resume with Last-Event-ID.
    head = res.head;
    draw();
    const url = '/v1/events/stream?after=' + Math.max(0, head - LOOK_BACK);
    const onOpen = () => {
      status.textContent = 'Live: connected to the event stream. ' +
        `It shows up to ${EARLIER} events from before the page opened, then new ones as they are committed, newest first.`;
    };
    // EventSource cannot send a header: with a pasted token the stream is
    // read with fetch, which can (tokens never go in a URL).
    if (getBearer()) {
      es = tokenSource(url, onEvent, onOpen, closed => {
        status.textContent = closed ? 'The event stream closed.' : 'Reconnecting to the event stream…';
      });
      return;
    }
    es = new EventSource(url);
    for (const t of EVENT_TYPES) es.addEventListener(t, onEvent);
    es.onopen = onOpen;
    es.onerror = () => {
      status.textContent = es.readyState === EventSource.CLOSED ? 'The event stream closed.' : 'Reconnecting to the event stream…';
    };
  }).catch(err => { if (!signal.aborted) status.textContent = 'The event stream is unavailable: ' + err.message; });

  return () => { es?.close(); if (frame) cancelAnimationFrame(frame); };
}

// streamHead asks the stream for the newest position: with ?after=now it
// names it before anything else, in an id without data ("id: 42"). The
// answer is read that far and dropped. It resolves to {status, head},
// head absent when the stream is not there.
async function streamHead(signal) {
  const hangUp = new AbortController();
  try {
    const res = await fetch('/v1/events/stream?after=now', {
      headers: {Accept: 'text/event-stream', ...authHeaders()}, cache: 'no-store', signal: AbortSignal.any([signal, hangUp.signal]),
    });
    if (!res.ok) return {status: res.status};
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    while (!text.includes('\n\n')) {
      const {value, done} = await reader.read();
      if (done) break;
      text += value;
    }
    const m = /^id: (\d+)\n\n/.exec(text);
    if (!m) throw new Error('it did not name its newest position');
    return {status: res.status, head: Number(m[1])};
  } finally {
    hangUp.abort();
  }
}

// tokenSource reads the stream at url as EventSource would, with the
// pasted bearer token in a header: each message with an event type and data
// goes to onEvent({data}); after a failure it reconnects in 3 s with
// Last-Event-ID, except after a 4xx (a token refused: the stream closes).
// onState(closed) reports a reconnection or the end. It returns {close}.
function tokenSource(url, onEvent, onOpen, onState) {
  const stop = new AbortController();
  let lastId = null;
  const connect = async () => {
    let retry = true;
    try {
      const headers = {Accept: 'text/event-stream', ...authHeaders()};
      if (lastId !== null) headers['Last-Event-ID'] = lastId;
      const res = await fetch(url, {headers, cache: 'no-store', signal: stop.signal});
      if (!res.ok) { retry = res.status >= 500; throw new Error('HTTP ' + res.status); }
      onOpen();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let type = 'message', data = [];
          for (const line of block.split('\n')) {
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i), v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'id') lastId = v;
            else if (field === 'event') type = v;
            else if (field === 'data') data.push(v);
          }
          if (data.length && EVENT_TYPES.includes(type)) onEvent({data: data.join('\n')});
        }
      }
    } catch {
      if (stop.signal.aborted) return;
    }
    if (stop.signal.aborted) return;
    onState(!retry);
    if (retry) setTimeout(connect, 3000);
  };
  connect();
  return {close: () => stop.abort()};
}

function eventItem(e) {
  return h('li', {class: 'event', 'data-position': e.position},
    h('span', {class: 'type'}, e.event_type),
    ' ',
    link(aggregateHref(e.aggregate_type, e.aggregate_id), `${e.aggregate_type} ${e.aggregate_id}`),
    h('span', {class: 'meta'}, ` ${eventNumbers(e)} · position ${e.position} · `, timeEl(e.timestamp)));
}
