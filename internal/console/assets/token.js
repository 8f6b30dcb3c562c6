// The Token page: where the user pastes an access token of orderd's OpenID
// provider, for a server started with ORDERD_OIDC_ISSUER; every API call
// of the console then carries it (dom.js keeps it in memory only).
import {h, api, ApiError, replace, message, getBearer, setBearer} from './dom.js';

export function render(main, _params, {signal}) {
  const body = h('div');
  main.append(h('h1', {}, 'Access token'), body);
  show(body, signal);
}

async function show(el, signal, note) {
  let mode = '';
  try {
    mode = (await api('/readyz', {signal})).auth;
  } catch (err) {
    if (signal.aborted) return;
    mode = err instanceof ApiError ? err.problem?.auth : '';
  }
  const input = h('input', {id: 'bearer-token', type: 'password', autocomplete: 'off', spellcheck: 'false'});
  const form = h('form', {class: 'token', 'aria-labelledby': 'bearer-h'},
    h('h2', {id: 'bearer-h'}, getBearer() ? 'A token is set' : 'No token set'),
    note ? message('ok', note) : null,
    message('info', mode === 'open'
      ? 'This server asks for no token: it runs without ORDERD_OIDC_ISSUER, and its API is open.'
      : 'This server asks for bearer tokens of its OpenID provider, with the scopes of each route ' +
        '(orders:read, orders:write, customers:read, customers:write, admin).'),
    h('p', {}, 'Paste an access token (a JWT of the provider). The console sends it with every call and keeps it in this page only, until you reload it.'),
    h('label', {for: 'bearer-token'}, 'Access token'), input,
    h('button', {type: 'submit'}, 'Use this token'),
    h('button', {type: 'button', class: 'secondary', onclick: () => { setBearer(''); show(el, signal, 'Token forgotten.'); }}, 'Forget token'));
  form.addEventListener('submit', e => {
    e.preventDefault();
    setBearer(input.value.trim());
    show(el, signal, getBearer() ? 'Token set: the console sends it with every call.' : 'Token cleared.');
  });
  replace(el, form);
}
