// End-to-end tests of the orderd console in a real headless Chromium,
// against a real orderd (and Kafka for the dead letters) that
// scripts/console-e2e.sh starts; it passes ORDERD_URL, ORDERD_ADMIN_TOKEN, E2E_TRACE_UI_URL,
// CHROMIUM, and E2E_KAFKA, E2E_ORDER_TOPIC, E2E_SCRIPT for the dead-letter
// test. Screenshots go to artifacts/.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdirSync} from 'node:fs';
import {randomUUID} from 'node:crypto';
import {chromium} from 'playwright-core';

const BASE = process.env.ORDERD_URL;
const TOKEN = process.env.ORDERD_ADMIN_TOKEN;
const ARTIFACTS = new URL('./artifacts/', import.meta.url).pathname;
assert.ok(BASE, 'ORDERD_URL is not set: run scripts/console-e2e.sh');
mkdirSync(ARTIFACTS, {recursive: true});

let browser;
before(async () => {
  // Debian's chromium, as root here: no sandbox.
  browser = await chromium.launch({executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox']});
});
after(async () => { await browser?.close(); });

// open loads path in a fresh browser context and collects the page's
// errors: console errors (a CSP violation is one), uncaught exceptions.
// The test fails if any was collected by its end.
// prepare, when given, runs on the page before it loads (to route requests).
async function open(t, path, prepare) {
  const context = await browser.newContext({viewport: {width: 1280, height: 900}});
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on('request', r => {
    const url = new URL(r.url());
    requests.push({method: r.method(), path: url.pathname, search: url.search, type: r.resourceType()});
  });
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', e => errors.push(String(e)));
  page.on('dialog', d => errors.push('unexpected dialog: ' + d.message()));
  await prepare?.(page);
  const res = await page.goto(BASE + path);
  assert.equal(res.status(), 200, `GET ${path}`);
  checkHeaders(res.headers(), path);
  t.after(async () => {
    await context.close();
    assert.deepEqual(errors, [], 'errors in the page');
  });
  return {page, errors, requests};
}

function checkHeaders(headers, path) {
  const csp = headers['content-security-policy'] || '';
  for (const want of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]) {
    assert.ok(csp.includes(want), `${path}: Content-Security-Policy ${csp} lacks ${want}`);
  }
  assert.equal(headers['x-content-type-options'], 'nosniff');
  assert.equal(headers['referrer-policy'], 'no-referrer');
}

async function shot(page, name) {
  await page.screenshot({path: ARTIFACTS + name + '.png', fullPage: true});
}

// call sends a request to the API and returns the parsed answer.
async function call(method, path, body, headers = {}) {
  const res = await fetch(BASE + path, {
    method, body: body && JSON.stringify(body),
    headers: {'Content-Type': 'application/json', ...headers},
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// TIME is the one format of a time in the console: local, year first, to the millisecond.
const TIME = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/;

const product = () => randomUUID();
async function customer(first = 'Ada') {
  return (await call('POST', '/v1/customers', {email: `c-${randomUUID()}@example.com`, first_name: first, last_name: 'Lovelace'})).id;
}
async function order(customerId, items = [{product_id: product(), quantity: 2}]) {
  return (await call('POST', '/v1/orders', {customer_id: customerId, items})).id;
}

// streamHead reads the newest position as the stream names it with ?after=now.
async function streamHead() {
  const stop = new AbortController();
  const res = await fetch(BASE + '/v1/events/stream?after=now', {signal: stop.signal});
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  while (!text.includes('\n\n')) text += (await reader.read()).value;
  stop.abort();
  return Number(/^id: (\d+)\n/.exec(text)[1]);
}

// First, while the store is empty (scripts/console-e2e.sh starts orderd on a new one).
test('on an empty store the feed says there are no events yet, then shows the first ones live', async t => {
  if (await streamHead() !== 0) {
    t.skip('the store is not empty');
    return;
  }
  const {page} = await open(t, '/console');
  await page.getByText('Live: connected to the event stream.').waitFor();
  const none = page.getByText('No events yet: they appear here as they are committed.');
  await none.waitFor();
  assert.equal(await page.locator('#feed-list li').count(), 0);
  await shot(page, 'live-empty');
  const c = await customer();
  await page.locator('#feed-list li', {hasText: c}).waitFor();
  assert.ok(await none.isHidden());
  assert.equal(await page.locator('#feed-list li').count(), 1);
});

test('the walkthrough order in its timeline, by deep link, and after a reload', async t => {
  // The README's walkthrough: create, change the items, confirm, ship, deliver.
  const c = await customer('John');
  const id = await order(c, [{product_id: '0f8fad5b-d9cb-469f-a165-70867728950e', quantity: 2},
    {product_id: '7c9e6679-7425-40de-944b-e07fc1f90ae7', quantity: 1}]);
  await call('PUT', `/v1/orders/${id}/items`, {items: [{product_id: '0f8fad5b-d9cb-469f-a165-70867728950e', quantity: 3}]});
  await call('POST', `/v1/orders/${id}/confirm`, null, {'If-Match': '"2"'});
  await call('POST', `/v1/orders/${id}/ship`, {tracking_number: 'TRACK-123-XYZ', carrier: 'DHL Express'});
  await call('POST', `/v1/orders/${id}/deliver`, {signature: 'John Doe'});
  const stored = (await call('GET', `/v1/orders/${id}/events`)).events;

  const {page} = await open(t, `/console/orders/${id}`);
  const check = async () => {
    await page.getByRole('heading', {level: 1, name: `Order ${id}`}).waitFor();
    const items = page.getByTestId('timeline').locator(':scope > li');
    await items.nth(4).waitFor();
    assert.equal(await items.count(), 5);
    const want = ['OrderCreated', 'OrderItemsUpdated', 'OrderConfirmed', 'OrderShipped', 'OrderDelivered'];
    for (let i = 0; i < 5; i++) {
      const li = items.nth(i);
      assert.equal(await li.locator('h3').innerText(), want[i]);
      assert.equal(await li.locator('dd.sequence').innerText(), String(i + 1));
      const text = await li.innerText();
      assert.ok(text.includes(stored[i].correlation_id), `event ${i + 1} shows its correlation id`);
      assert.ok(text.includes(stored[i].causation_id), `event ${i + 1} shows its causation id`);
      // The command's trace id, from the stored traceparent, linked to the
      // trace UI that orderd was given (ORDERD_TRACE_UI_URL).
      const traceId = stored[i].metadata.traceparent.split('-')[1];
      assert.equal(await li.getByTestId('trace-id').innerText(), traceId, `event ${i + 1} shows its trace id`);
      assert.equal(await li.locator('a:has([data-testid="trace-id"])').getAttribute('href'),
        process.env.E2E_TRACE_UI_URL.replace('{trace_id}', traceId), `event ${i + 1} links its trace`);
    }
    const state = page.getByTestId('current-state');
    await state.getByText('delivered', {exact: true}).waitFor();
    assert.ok((await state.innerText()).includes('TRACK-123-XYZ'));
  };
  await check();
  await shot(page, 'order');
  await page.reload(); // a deep link works on reload: the server serves the app at any /console path
  await check();

  // The correlation id links to the events that share it.
  await page.getByTestId('timeline').locator(':scope > li').nth(2).getByRole('link', {name: stored[2].correlation_id}).click();
  const related = page.getByTestId('correlated');
  await related.waitFor();
  assert.match(await related.innerText(), /^OrderConfirmed \(sequence 3\) of Order/);
  assert.equal(new URL(page.url()).searchParams.get('correlation'), stored[2].correlation_id);
});

test('a long timeline comes a page at a time: the first 100 events, then the next ones on request', async t => {
  const c = await customer();
  const id = await order(c);
  for (let i = 1; i < 130; i++) {
    await call('PUT', `/v1/orders/${id}/items`, {items: [{product_id: product(), quantity: i}]});
  }
  const {page, requests} = await open(t, `/console/orders/${id}`);
  const items = page.getByTestId('timeline').locator(':scope > li');
  const status = page.getByTestId('timeline-status');
  await items.nth(99).waitFor();
  assert.equal(await items.count(), 100, 'the first page only');
  assert.equal(await status.innerText(), 'Showing events 1 to 100 of 130.');
  assert.equal(await items.last().locator('dd.sequence').innerText(), '100');
  // Time travel knows the whole history, loaded or not.
  await page.getByText(/^Version 130 of 130/).waitFor();
  const histories = () => requests.filter(r => r.path === `/v1/orders/${id}/events`).map(r => r.search);
  assert.deepEqual(histories(), ['?limit=100']);
  await shot(page, 'timeline-first-page');

  const more = page.getByRole('button', {name: 'Load more events'});
  await more.click();
  await items.nth(129).waitFor();
  assert.equal(await items.count(), 130);
  assert.equal(await items.nth(100).locator('dd.sequence').innerText(), '101');
  assert.equal(await items.last().locator('h3').innerText(), 'OrderItemsUpdated');
  assert.equal(await status.innerText(), 'All 130 events shown.');
  assert.ok(await more.isHidden(), 'no more to load');
  assert.deepEqual(histories(), ['?limit=100', '?after_version=100&limit=100'], 'the next page, as Link named it');
});

test('the feed opens with the most recent events, then follows live, with no gap and no duplicate; it pauses when scrolled', async t => {
  // Events before the page opens: customers (each also takes a position
  // for its email's reservation, which the stream does not show) and
  // their orders, more than the feed shows of them.
  const made = []; // [type, aggregate, id], oldest first
  for (let i = 0; i < 30; i++) {
    const c = await customer();
    made.push(['CustomerRegistered', 'Customer', c], ['OrderCreated', 'Order', await order(c)]);
  }
  const started = Date.now();
  const {page, requests} = await open(t, '/console');
  await page.getByText('Live: connected to the event stream.').waitFor();
  const feed = page.locator('#feed-list li');
  const texts = () => feed.evaluateAll(lis => lis.map(li => li.querySelector('.type').textContent + ' ' + li.querySelector('a').textContent));
  const positions = () => feed.evaluateAll(lis => lis.map(li => Number(li.dataset.position)));
  // The 50 newest events from before, newest first: nothing missing among them, nothing older.
  const earlier = made.slice(-50).reverse().map(([type, agg, id]) => `${type} ${agg} ${id}`);
  await feed.nth(49).waitFor();
  await page.waitForTimeout(500); // nothing more comes
  assert.deepEqual(await texts(), earlier, 'the feed opens with the 50 newest events');
  // An event's numbers are labelled, its time in the one format.
  const first = feed.first();
  assert.match(await first.locator('.meta').innerText(), /^\s*sequence 1 · schema version 2 · position \d+ · /);
  assert.match(await first.locator('time').innerText(), TIME);
  // Health from /readyz: the store, the workers with their role, the dead letters.
  const health = page.getByRole('region', {name: 'Health'});
  await health.getByRole('heading', {name: 'Projector'}).waitFor();
  assert.match(await health.innerText(), /Role here\s+active/);
  await page.getByTestId('dead-letter-count').waitFor();

  // Then live, on top of them: no gap, no duplicate.
  const c = await customer();
  const id = await order(c);
  const item = page.locator('#feed-list li', {hasText: id});
  await item.waitFor({timeout: 10000});
  assert.match(await item.innerText(), /^OrderCreated Order /);
  assert.equal(await feed.first().innerText(), await item.innerText(), 'newest first');
  assert.match(await feed.nth(1).innerText(), new RegExp(`^CustomerRegistered Customer ${c}`));
  await page.waitForTimeout(500);
  assert.deepEqual(await texts(), [`OrderCreated Order ${id}`, `CustomerRegistered Customer ${c}`, ...earlier]);
  const pos = await positions();
  assert.ok(pos.every((p, i) => i === 0 || p < pos[i - 1]), `positions decrease, each once: ${pos}`);
  // The page's time of an event is the order page's: one format.
  const at = await item.locator('time').innerText();

  // Enough events to scroll, then scroll away from the top: new ones are
  // counted, not inserted, until the user asks for them.
  let lastCustomer;
  for (let i = 0; i < 25; i++) lastCustomer = await customer();
  await page.locator('#feed-list li').nth(25).waitFor();
  await page.locator('#feed-list li', {hasText: lastCustomer}).waitFor();
  await page.locator('.feed-scroll').evaluate(el => { el.scrollTop = el.scrollHeight; });
  const later = await order(c);
  const more = page.getByRole('button', {name: '1 new event — show'});
  await more.waitFor();
  assert.equal(await page.locator('#feed-list li', {hasText: later}).count(), 0, 'not inserted while scrolled');
  await more.click();
  await page.locator('#feed-list li', {hasText: later}).first().waitFor();
  assert.ok((await page.locator('#feed-list li').first().innerText()).includes(later));
  assert.ok(await more.isHidden());
  await page.locator('.feed-scroll').evaluate(el => { el.scrollTop = 0; });
  await shot(page, 'live');

  // No request storm: one stream for the whole visit (after the probe of
  // ?after=now that names the newest position), /readyz every 5 s.
  const streams = requests.filter(r => r.method === 'GET' && r.path === '/v1/events/stream');
  assert.equal(streams.filter(r => r.type === 'eventsource').length, 1, 'one EventSource');
  assert.deepEqual(streams.filter(r => r.type !== 'eventsource').map(r => r.search), ['?after=now'], 'one probe of the head');
  assert.equal(streams.length, 2);
  // The probe hung up: the server serves this page one stream.
  let clients;
  for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise(r => setTimeout(r, 200))) {
    clients = Number(/^orderd_stream_clients (\d+)$/m.exec(await (await fetch(BASE + '/metrics')).text())?.[1]);
    if (clients === 1) break;
  }
  assert.equal(clients, 1, 'streams open on the server');
  const polls = requests.filter(r => r.path === '/readyz').length;
  assert.ok(polls <= Math.ceil((Date.now() - started) / 5000) + 1, `${polls} polls of /readyz`);

  // The order's page shows that event's time as the feed did.
  await page.getByRole('link', {name: `Order ${id}`}).click();
  await page.getByTestId('timeline').locator(':scope > li time').first().waitFor();
  assert.equal(await page.getByTestId('timeline').locator(':scope > li time').first().innerText(), at);
});

test('on a store with no stream of all events (CQL) the feed says so', async t => {
  // CQL orders events per aggregate only: the stream answers 501, as it
  // does there (internal/api/sse.go).
  const {page, errors, requests} = await open(t, '/console', page => page.route('**/v1/events/stream**', route => route.fulfill({
    status: 501, contentType: 'application/problem+json',
    body: JSON.stringify({type: 'about:blank', title: 'Not Implemented', status: 501, code: 'stream_not_offered', detail: 'no global commit order'}),
  })));
  await page.getByText('This store offers no live stream of all events (the CQL backend keeps no global order).').waitFor();
  await page.getByTestId('dead-letter-count').waitFor();
  assert.equal(await page.locator('#feed-list li').count(), 0);
  assert.equal(requests.filter(r => r.type === 'eventsource').length, 0, 'no EventSource');
  assert.ok(await page.getByText('No events yet').isHidden(), 'no claim that the store is empty');
  assert.deepEqual(errors.splice(0), ['Failed to load resource: the server responded with a status of 501 (Not Implemented)']);
  await shot(page, 'live-cql');
});

test('time travel through the versions, with what changed at each', async t => {
  const c = await customer();
  const id = await order(c);
  await call('POST', `/v1/orders/${id}/confirm`);
  await call('POST', `/v1/orders/${id}/ship`, {tracking_number: 'T-42', carrier: 'Post'});

  const {page} = await open(t, `/console/orders/${id}?version=1`);
  const out = page.locator('#version-out');
  const state = () => page.getByTestId('state-at-version').innerText().then(JSON.parse);
  const changed = async () => Object.fromEntries(await page.getByTestId('changes').locator('tbody tr').evaluateAll(rows =>
    rows.map(r => [r.querySelector('th').textContent, [r.cells[1].textContent, r.cells[2].textContent]])));
  const at = async v => {
    await page.getByText(new RegExp(`^Version ${v} of 3`)).waitFor();
    await page.getByRole('heading', {name: `State at version ${v}`}).waitFor();
  };

  await at(1);
  assert.match(await out.innerText(), /OrderCreated/);
  assert.equal((await state()).status, 'created');
  assert.equal((await state()).version, 1);
  await shot(page, 'timetravel-v1');

  await page.getByRole('button', {name: /Next version/}).click();
  await at(2);
  assert.equal((await state()).status, 'confirmed');
  assert.deepEqual((await changed()).status, ['created', 'confirmed']);
  assert.equal(new URL(page.url()).searchParams.get('version'), '2');

  await page.getByRole('button', {name: /Next version/}).click();
  await at(3);
  const s3 = await state();
  assert.equal(s3.status, 'shipped');
  assert.equal(s3.tracking_number, 'T-42');
  const c3 = await changed();
  assert.deepEqual(c3.status, ['confirmed', 'shipped']);
  assert.deepEqual(c3.tracking_number, ['null', 'T-42']);
  assert.deepEqual(c3.carrier, ['null', 'Post']);
  assert.ok(!('customer_id' in c3), 'unchanged fields are not listed');
  assert.ok(await page.getByRole('button', {name: /Next version/}).isDisabled());
  await shot(page, 'timetravel-v3');

  // The slider by keyboard; the timeline marks the version shown.
  const slider = page.getByRole('slider', {name: 'Version'});
  await slider.focus();
  await page.keyboard.press('ArrowLeft');
  await at(2);
  assert.equal(await page.locator('.timeline > li.current h3').innerText(), 'OrderConfirmed');
  assert.equal(await page.locator('.timeline > li.current dd.sequence').innerText(), '2');
  await page.reload();
  await at(2); // the version is in the URL
});

test('a dead letter replayed and another discarded from the console', async t => {
  if (!process.env.E2E_KAFKA) {
    t.skip('no Kafka (scripts/console-e2e.sh could not start one)');
    return;
  }
  // Orders of 100 lines (about 6 KB) are over the topic's 4096 bytes.
  const c = await customer();
  const big = () => Array.from({length: 100}, () => ({product_id: product(), quantity: 1}));
  const first = await order(c, big());
  const second = await order(c, big());
  const auth = {Authorization: 'Bearer ' + TOKEN};
  let letters = [];
  for (const deadline = Date.now() + 60000; Date.now() < deadline; await new Promise(r => setTimeout(r, 500))) {
    letters = (await call('GET', '/v1/admin/dlq', null, auth)).dead_letters.filter(l => [first, second].includes(l.aggregate_id));
    if (letters.length === 2) break;
  }
  assert.equal(letters.length, 2, 'both orders dead-lettered');
  const [a, b] = [letters.find(l => l.aggregate_id === first), letters.find(l => l.aggregate_id === second)];

  const {page, errors} = await open(t, '/console/dead-letters');
  const input = page.getByLabel('Admin token');
  await input.fill('wrong-token');
  await page.getByRole('button', {name: 'Unlock'}).click();
  await page.getByText('The server refused that token.').waitFor();
  // The browser logs the refusal; it is the one error this page may show.
  assert.deepEqual(errors.splice(0), ['Failed to load resource: the server responded with a status of 401 (Unauthorized)']);
  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', {name: 'Unlock'}).click();
  const table = page.getByTestId('dead-letters');
  await table.waitFor();
  for (const l of [a, b]) {
    const row = table.locator(`tr[data-id="${l.id}"]`);
    assert.match(await row.innerText(), /OrderCreated \(sequence 1\)/);
    assert.match(await row.innerText(), /failed/);
  }
  await page.getByRole('button', {name: `Inspect dead letter ${a.id}`}).click();
  await page.getByTestId('dead-letter-event').waitFor();
  assert.equal(JSON.parse(await page.getByTestId('dead-letter-event').innerText()).aggregate_id, first);
  await shot(page, 'dead-letters');

  // Fix the cause, then replay the first from the page.
  execFileSync('bash', [process.env.E2E_SCRIPT, 'alter-topic', process.env.E2E_ORDER_TOPIC, 'max.message.bytes=1048588'], {stdio: 'inherit'});
  await page.getByRole('button', {name: `Replay dead letter ${a.id}`}).click();
  await page.getByText(`Dead letter ${a.id} replayed: 1 event(s) published.`).waitFor({timeout: 30000});
  assert.equal(await table.locator(`tr[data-id="${a.id}"]`).count(), 0);

  // Discard the second, after the confirmation dialog.
  page.removeAllListeners('dialog');
  page.once('dialog', d => d.accept());
  await page.getByRole('button', {name: `Discard dead letter ${b.id}`}).click();
  await page.getByText(`Dead letter ${b.id} discarded: 0 event(s) published.`).waitFor({timeout: 30000});
  await shot(page, 'dead-letters-done');

  const left = (await call('GET', '/v1/admin/dlq', null, auth)).dead_letters.map(l => l.id);
  assert.ok(!left.includes(a.id) && !left.includes(b.id), `the API still lists ${left}`);
  // The token was never put in a URL or in storage.
  assert.ok(!page.url().includes(TOKEN));
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length + document.cookie.length), 0);
  // A reload forgets it.
  await page.reload();
  await page.getByLabel('Admin token').waitFor();
});

// lowContrast lists the visible text in the page whose contrast with its
// background is below WCAG AA (4.5:1, or 3:1 for large text). Disabled
// controls are exempt, as WCAG allows.
function lowContrast(page) {
  return page.evaluate(() => {
    const rgba = c => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = el => {
      for (; el; el = el.parentElement) {
        const c = rgba(getComputedStyle(el).backgroundColor);
        if (c.length === 3 || c[3] > 0) return c;
      }
      return [255, 255, 255];
    };
    const bad = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || !el.checkVisibility() || el.closest(':disabled')) continue;
      const st = getComputedStyle(el);
      const [l1, l2] = [lum(rgba(st.color)), lum(background(el))];
      const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
      const large = parseFloat(st.fontSize) >= 24 || (parseFloat(st.fontSize) >= 18.66 && Number(st.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) bad.push(`${ratio.toFixed(2)}: ${n.textContent.trim().slice(0, 40)}`);
    }
    return bad;
  });
}

test('keyboard: Tab reaches the search, Enter opens the id; controls have accessible names', async t => {
  const c = await customer();
  const id = await order(c);
  const {page} = await open(t, '/console');
  assert.ok(await page.getByRole('navigation', {name: 'Console'}).getByRole('link', {name: 'Dead letters'}).isVisible());
  assert.equal(await page.getByRole('link', {name: 'Live'}).getAttribute('aria-current'), 'page');
  const search = page.getByRole('searchbox', {name: 'Order or customer id'});
  assert.ok(await page.getByRole('button', {name: 'Open'}).isVisible());
  await page.getByTestId('dead-letter-count').waitFor();
  assert.deepEqual(await lowContrast(page), [], 'text below AA contrast on the live page');

  let reached = false;
  for (let i = 0; i < 10 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await search.evaluate(el => el === document.activeElement);
  }
  assert.ok(reached, 'Tab reaches the search box');
  // Focus is visible: an outline, from :focus-visible.
  const outline = await search.evaluate(el => getComputedStyle(el).outlineStyle + ' ' + getComputedStyle(el).outlineWidth);
  assert.match(outline, /^solid 3px$/);
  await page.keyboard.type(id);
  await page.keyboard.press('Enter');
  await page.waitForURL(`**/console/orders/${id}`);
  // Focus moves to the new page's heading.
  const h1 = page.getByRole('heading', {level: 1});
  await h1.waitFor();
  assert.ok(await h1.evaluate(el => el === document.activeElement));
  assert.ok((await h1.innerText()).includes(id));
  assert.ok(await page.getByRole('slider', {name: 'Version'}).isVisible());
  await page.getByTestId('changes').waitFor();
  assert.deepEqual(await lowContrast(page), [], 'text below AA contrast on the order page');
  await shot(page, 'keyboard-search');

  // The customer's page from the order, by keyboard: its orders list it.
  const toCustomer = page.getByTestId('current-state').getByRole('link', {name: c});
  await toCustomer.focus();
  await page.keyboard.press('Enter');
  await page.waitForURL(`**/console/customers/${c}`);
  await page.getByTestId('customer-orders').getByRole('link', {name: id}).waitFor();
  // Back, with the browser's history.
  await page.goBack();
  await page.waitForURL(`**/console/orders/${id}`);
  await page.getByTestId('timeline').waitFor();
});

test('data is shown as text, never run as markup', async t => {
  const evil = '<img src=x onerror=alert(1)><script>alert(2)</script>';
  const c = (await call('POST', '/v1/customers', {email: `x-${randomUUID()}@example.com`, first_name: evil, last_name: '"><b>bold</b>'})).id;
  const {page} = await open(t, `/console/customers/${c}`);
  const state = page.getByTestId('current-state');
  await state.getByText(evil, {exact: true}).waitFor();
  assert.equal(await page.locator('main img, main script, main b').count(), 0);
  assert.ok((await page.getByTestId('timeline').textContent()).includes(JSON.stringify(evil).slice(1, -1)), 'the payload shows the name as text');
  await shot(page, 'customer');
});

test("a customer's orders count their items; an event's numbers are labelled; one time format", async t => {
  const c = await customer('Grace');
  const id = await order(c, [{product_id: product(), quantity: 3}]);
  const {page} = await open(t, `/console/customers/${c}`);
  const orders = page.getByTestId('customer-orders');
  await orders.getByRole('link', {name: id}).waitFor();
  assert.deepEqual(await orders.locator('thead th').allInnerTexts(), ['Order', 'Status', 'Items', 'Quantity', 'Version', 'Updated']);
  // One line of quantity 3: one item.
  const row = orders.locator(`tr[data-id="${id}"]`);
  assert.equal(await row.locator('td.items').innerText(), '1');
  assert.equal(await row.locator('td.quantity').innerText(), '3');
  assert.match(await row.locator('time').innerText(), TIME);

  // The sequence and the schema version, each named.
  const first = page.getByTestId('timeline').locator(':scope > li').first();
  assert.match(await first.locator('dl').innerText(), /^Sequence\s+1\s+Schema version\s+1\s+Time\s/);
  // One time format: the event's time in the timeline, and the same
  // instant in the current state (registered_at) and at time travel.
  const eventTime = await first.locator('time').innerText();
  assert.match(eventTime, TIME);
  const state = page.getByTestId('current-state');
  await state.locator('time').first().waitFor();
  const registered = await state.locator('dt', {hasText: /^registered_at$/}).locator('xpath=following-sibling::dd[1]').innerText();
  assert.equal(registered, eventTime, 'registered_at as the timeline shows the time');
  assert.match(await page.locator('#version-out').innerText(), new RegExp(`^Version 1 of 1 — CustomerRegistered at ${eventTime.replace(/\./g, '\\.')}$`));
  await shot(page, 'customer-orders');

  // The order: its created_at and its first event's time, and the labels.
  await orders.getByRole('link', {name: id}).click();
  const created = page.getByTestId('timeline').locator(':scope > li').first();
  await created.waitFor();
  assert.match(await created.locator('dl').innerText(), /^Sequence\s+1\s+Schema version\s+2\s+Time\s/);
  const orderState = page.getByTestId('current-state');
  await orderState.locator('time').first().waitFor();
  const createdAt = await orderState.locator('dt', {hasText: /^created_at$/}).locator('xpath=following-sibling::dd[1]').innerText();
  assert.equal(createdAt, await created.locator('time').innerText());
  assert.match(createdAt, TIME);
});

test('a pasted access token goes with every API call, the live feed included, never in a URL', async t => {
  const {page} = await open(t, '/console/token');
  // This orderd runs without ORDERD_OIDC_ISSUER: it takes any token and
  // looks at none, so what is checked here is what the console sends.
  await page.getByText('This server asks for no token').waitFor();
  const secret = 'e2e-bearer-' + randomUUID();
  const sent = [];
  page.on('request', r => {
    const url = new URL(r.url());
    if (url.pathname.startsWith('/v1/')) sent.push({path: url.pathname, url: r.url(), type: r.resourceType(), auth: r.headers().authorization});
  });
  await page.getByLabel('Access token').fill(secret);
  await page.getByRole('button', {name: 'Use this token'}).click();
  await page.getByText('Token set: the console sends it with every call.').waitFor();

  // In-app navigation keeps the token (a reload forgets it): the live feed.
  await page.getByRole('navigation', {name: 'Console'}).getByRole('link', {name: 'Live'}).click();
  await page.getByText('Live: connected to the event stream.').waitFor();
  const c = await customer('Token');
  await page.locator('#feed-list li', {hasText: c}).waitFor();
  // And an aggregate's page.
  await page.locator('#feed-list li', {hasText: c}).getByRole('link').click();
  await page.getByTestId('timeline').locator(':scope > li').first().waitFor();

  const stream = sent.filter(r => r.path === '/v1/events/stream');
  assert.ok(stream.length >= 2, `stream requests: ${JSON.stringify(stream)}`);
  assert.ok(stream.every(r => r.type === 'fetch'), 'with a token the stream is read with fetch, not EventSource');
  assert.ok(sent.some(r => r.path.startsWith('/v1/customers/')), 'the customer page called the API');
  for (const r of sent) {
    assert.equal(r.auth, 'Bearer ' + secret, `${r.path} without the token`);
    assert.ok(!r.url.includes(secret), `the token in a URL: ${r.url}`);
  }
  await shot(page, 'token');
});
