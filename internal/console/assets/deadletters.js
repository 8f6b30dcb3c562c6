// Dead letters: list, inspect, replay and discard, through the admin API.
// The admin token is asked for here and kept in this module's memory only:
// never in a URL, a cookie or storage, so a reload forgets it.
import {h, api, ApiError, replace, link, aggregateHref, timeEl, json, message} from './dom.js';

let token = '';

export function render(main, _params, {signal}) {
  const body = h('div');
  main.append(h('h1', {}, 'Dead letters'),
    h('p', {}, 'Events Kafka refused for good, and the events of their aggregates parked behind them. ' +
      'Replaying publishes a dead letter and those behind it, in order; discarding drops it and publishes the others.'),
    body);
  if (token) list(body, signal); else askToken(body, signal);
}

function askToken(el, signal, why) {
  const input = h('input', {id: 'admin-token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false'});
  const form = h('form', {class: 'token', 'aria-labelledby': 'token-h'},
    h('h2', {id: 'token-h'}, 'Unlock the admin API'),
    why ? message('error', why) : null,
    h('p', {}, 'The token is ORDERD_ADMIN_TOKEN of the server, or, with ORDERD_OIDC_ISSUER, an access token of scope admin. The console keeps it in this page only, until you reload it.'),
    h('label', {for: 'admin-token'}, 'Admin token'), input,
    h('button', {type: 'submit'}, 'Unlock'));
  form.addEventListener('submit', e => {
    e.preventDefault();
    token = input.value.trim();
    if (token) list(el, signal);
  });
  replace(el, form);
  input.focus();
}

// refused handles the answers that say the token cannot be used.
function refused(el, signal, err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    token = '';
    askToken(el, signal, 'The server refused that token.');
    return true;
  }
  if (err instanceof ApiError && err.status === 404 && !err.problem?.code?.startsWith('dead_letter')) {
    replace(el, message('error', 'This server has no admin API: it runs without ORDERD_ADMIN_TOKEN, or without Kafka.'));
    return true;
  }
  return false;
}

async function list(el, signal, note) {
  replace(el, message('info', 'Loading…'));
  let page;
  try {
    page = await api('/v1/admin/dlq?limit=500', {token, signal});
  } catch (err) {
    if (signal.aborted || refused(el, signal, err)) return;
    replace(el, message('error', 'Could not list the dead letters: ' + err.message));
    return;
  }
  const detail = h('div', {id: 'dead-letter-detail'});
  const forget = h('button', {type: 'button', class: 'secondary', onclick: () => { token = ''; askToken(el, signal); }}, 'Forget token');
  const refresh = h('button', {type: 'button', class: 'secondary', onclick: () => list(el, signal)}, 'Refresh');
  const letters = page.dead_letters;
  replace(el,
    h('div', {class: 'toolbar'}, refresh, forget),
    note || null,
    letters.length === 0
      ? message('ok', 'No dead letters.')
      : h('table', {class: 'dlq', 'data-testid': 'dead-letters'},
        h('caption', {}, `${letters.length} dead letter${letters.length === 1 ? '' : 's'}` + (page.next_after ? ' (the first 500)' : '')),
        h('thead', {}, h('tr', {}, ['Id', 'Event', 'Aggregate', 'State', 'Error', 'Attempts', 'Last failure', 'Actions']
          .map(t => h('th', {scope: 'col'}, t)))),
        h('tbody', {}, letters.map(l => h('tr', {'data-id': l.id},
          h('td', {}, String(l.id)),
          h('td', {}, `${l.event_type} (sequence ${l.sequence})`),
          h('td', {}, link(aggregateHref(l.aggregate_type, l.aggregate_id), `${l.aggregate_type} ${l.aggregate_id}`)),
          h('td', {}, h('span', {class: 'badge badge-' + (l.state === 'failed' ? 'down' : 'degraded')}, l.state)),
          h('td', {class: 'error'}, l.error ?? '—'),
          h('td', {}, String(l.attempts)),
          h('td', {}, timeEl(l.last_failed_at)),
          h('td', {class: 'actions'},
            h('button', {type: 'button', 'aria-label': `Inspect dead letter ${l.id}`, onclick: () => inspect(detail, l.id, signal, el)}, 'Inspect'),
            l.state === 'failed' ? [
              h('button', {type: 'button', 'aria-label': `Replay dead letter ${l.id}`, onclick: () => act(el, signal, l.id, 'replay')}, 'Replay'),
              h('button', {type: 'button', class: 'danger', 'aria-label': `Discard dead letter ${l.id}`, onclick: () => act(el, signal, l.id, 'discard')}, 'Discard'),
            ] : null))))),
    detail);
}

async function inspect(el, id, signal, root) {
  replace(el, message('info', 'Loading…'));
  try {
    const d = await api(`/v1/admin/dlq/${id}`, {token, signal});
    replace(el, h('section', {'aria-labelledby': 'dl-h'},
      h('h2', {id: 'dl-h', tabindex: -1}, `Dead letter ${id}`),
      h('h3', {}, 'Dead letter'), h('pre', {}, json(d.dead_letter)),
      h('h3', {}, 'Event'), h('pre', {'data-testid': 'dead-letter-event'}, json(d.event))));
    el.querySelector('h2').focus();
  } catch (err) {
    if (!signal.aborted && !refused(root, signal, err)) replace(el, message('error', `Could not load dead letter ${id}: ${err.message}`));
  }
}

// act replays or discards a dead letter; the server answers once the
// active relay has carried it out (up to 20 s).
async function act(el, signal, id, what) {
  if (what === 'discard' && !confirm(`Discard dead letter ${id}? Its event will never be published.`)) return;
  for (const b of el.querySelectorAll('button')) b.disabled = true;
  const busy = message('info', `${what === 'replay' ? 'Replaying' : 'Discarding'} dead letter ${id}…`);
  el.prepend(busy);
  try {
    const r = await api(`/v1/admin/dlq/${id}${what === 'replay' ? '/replay' : ''}`,
      {method: what === 'replay' ? 'POST' : 'DELETE', token, signal});
    list(el, signal, message('ok', `Dead letter ${id} ${what === 'replay' ? 'replayed' : 'discarded'}: ${r.published} event(s) published.`));
  } catch (err) {
    if (signal.aborted || refused(el, signal, err)) return;
    list(el, signal, message('error', `Could not ${what} dead letter ${id}: ${err.message}`));
  }
}
