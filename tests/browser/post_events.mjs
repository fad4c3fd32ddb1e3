// Posts events to a live tidegate from pages in headless Chromium, as a web SDK would.
//
//   node post_events.mjs TIDEGATE_URL KEY ALLOWED_PORT OTHER_PORT
//
// Serves one page on http://127.0.0.1:ALLOWED_PORT (listed in cors.allowed_origins) and
// the same page on http://127.0.0.1:OTHER_PORT (not listed). From each it sends one event
// with fetch (JSON, X-Api-Key: a preflighted request) and one with navigator.sendBeacon
// (text/plain, ?api_key=: no preflight). Prints one JSON line of what the pages saw; the
// Rust test (tests/browser.rs) checks what tidegate kept.
import http from 'node:http';
import { chromium } from 'playwright-core';

const [tidegate, key, allowedPort, otherPort] = process.argv.slice(2);

const page = `<!doctype html><title>shop</title><script>
async function send(tidegate, key, fetchId, beaconId) {
  const event = (id) => ({ event_id: id, user_id: 'browser-user', event_type: 'page_view',
                           event_time: new Date().toISOString(), payload: { n: 1.50 } });
  let fetched;
  try {
    const r = await fetch(tidegate + '/v1/events', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key },
      body: JSON.stringify(event(fetchId)),
    });
    fetched = { status: r.status, body: await r.json() };
  } catch (e) {
    fetched = { error: String(e) };
  }
  const queued = navigator.sendBeacon(tidegate + '/v1/events?api_key=' + key,
                                      JSON.stringify(event(beaconId)));
  return { fetched, queued };
}
</script>`;

function serve(port) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(page);
    });
    server.listen(Number(port), '127.0.0.1', () => resolve(server));
  });
}

const servers = [await serve(allowedPort), await serve(otherPort)];
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const results = {};
try {
  for (const [name, port, ids] of [
    ['allowed', allowedPort, ['0190f5a1-0000-7000-8000-00000000a001', '0190f5a1-0000-7000-8000-00000000a002']],
    ['other', otherPort, ['0190f5a1-0000-7000-8000-00000000b001', '0190f5a1-0000-7000-8000-00000000b002']],
  ]) {
    const context = await browser.newContext();
    const tab = await context.newPage();
    await tab.goto(`http://127.0.0.1:${port}/`);
    results[name] = await tab.evaluate(([t, k, a, b]) => send(t, k, a, b), [tidegate, key, ...ids]);
    // A beacon is sent when the page lets go of it: close the page, then give it time.
    await tab.close({ runBeforeUnload: true });
    await new Promise((r) => setTimeout(r, 300));
    await context.close();
  }
} finally {
  await browser.close();
  for (const s of servers) s.close();
}
console.log(JSON.stringify(results));
