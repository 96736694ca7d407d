/**
 * Issue 15: with authentication off (the default), a web page could act on locks through its
 * visitor's browser, which reaches servers its author cannot. A page whose name is made to
 * resolve to the server (DNS rebinding) is refused by the Host check; a change sent by a page
 * of another site (an `<img>`, a form, a `no-cors` fetch) is refused by where it comes from;
 * curl, the SDK and the guide's scripts send none of those headers and pass. Against the real
 * compiled server, and in Chromium.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { launchBrowser } from './support/browser.js';
import { API, call } from './support/rest.js';
import { FREE_ARGS, runToExit, type ServerProcess, startServerProcess } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

interface Answer {
  readonly status: number;
  /** The JSON body; {} when there is none or it is not JSON. */
  readonly json: Record<string, unknown>;
  readonly headers: http.IncomingHttpHeaders;
}

/** One request with exactly these headers (`host` too, when given) and nothing a browser adds. */
function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const sent = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        timeout: 10_000,
        headers:
          body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => {
          const isJson = /json/.test(String(response.headers['content-type'])) && text !== '';
          resolve({
            status: response.statusCode ?? 0,
            json: isJson ? (JSON.parse(text) as Record<string, unknown>) : {},
            headers: response.headers,
          });
        });
        response.on('error', reject);
      },
    );
    sent.on('timeout', () => sent.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    sent.on('error', reject);
    sent.end(body);
  });
}

const unique = (label: string) => `${label}-${Math.random().toString(36).slice(2, 10)}`;

async function take(server: ServerProcess, service = unique('guarded')): Promise<string> {
  const reply = await call(server.baseUrl, 'POST', `${API}/lock`, { service, who: 'victim' });
  assert.equal(reply.status, 201, JSON.stringify(reply.json));
  return String(reply.json.id);
}

async function isHeld(server: ServerProcess, id: string): Promise<boolean> {
  return (await call(server.baseUrl, 'GET', `${API}/lock/${id}`)).status === 200;
}

/** The history's event types of one lock, oldest first. */
async function eventsOf(server: ServerProcess, id: string): Promise<string[]> {
  const reply = await call(server.baseUrl, 'GET', `${API}/history?limit=1000`);
  return (reply.json.events as Array<{ type: string; lock: { id: string } }>)
    .filter((event) => event.lock.id === id)
    .map((event) => event.type)
    .reverse();
}

const hostRefused = (answer: Answer, what: string) => {
  assert.equal(answer.status, 403, `${what}: ${answer.status} ${JSON.stringify(answer.json)}`);
  assert.equal(answer.json.code, 'HOST_NOT_ALLOWED', what);
  assert.match(String(answer.json.error), /--allowed-host/, what);
};

const crossSiteRefused = (answer: Answer, what: string) => {
  assert.equal(answer.status, 403, `${what}: ${answer.status} ${JSON.stringify(answer.json)}`);
  assert.equal(answer.json.code, 'CROSS_SITE_REQUEST', what);
};

describe('the Host check, listening on loopback (the default)', () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServerProcess({ args: ['--host', '127.0.0.1', ...FREE_ARGS] });
  });
  after(async () => {
    await server?.stop();
  });

  test('its own names, with or without the port, and any IP address are served', async () => {
    const port = server.httpPort;
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      'localhost',
      `LocalHost.:${port}`,
      `[::1]:${port}`,
      '10.0.0.7:8080',
      '[fd00::7]',
    ]) {
      const answer = await request(port, 'GET', `${API}/locks/list`, { host });
      assert.equal(answer.status, 200, `Host: ${host}: ${JSON.stringify(answer.json)}`);
    }
  });

  test('any other name (a DNS rebinding page) is 403 HOST_NOT_ALLOWED on every route but the health checks', async () => {
    const port = server.httpPort;
    const id = await take(server);
    const service = unique('rebound');
    const machine = hostname().toLowerCase() === 'localhost' ? 'not-this-machine' : hostname();
    for (const host of [
      'evil.example',
      `evil.example:${port}`,
      'tracker:8080',
      `${machine}:${port}`,
      `127.0.0.1.nip.io:${port}`,
      `localhost.evil.example:${port}`,
      'bad host',
    ]) {
      for (const [method, path, body] of [
        ['GET', `${API}/locks/list`],
        ['GET', '/'],
        ['GET', '/openapi.json'],
        ['GET', '/metrics'],
        ['GET', `${API}/unlock/${id}`],
        ['POST', `${API}/lock`, JSON.stringify({ service, who: 'rebinder' })],
      ] as const) {
        const headers: Record<string, string> = { host };
        if (body !== undefined) headers['content-type'] = 'application/json';
        hostRefused(await request(port, method, path, headers, body), `${method} ${path} with Host: ${host}`);
      }
      assert.equal((await request(port, 'GET', '/healthz', { host })).status, 200, 'health checks answer');
      assert.equal((await request(port, 'GET', '/readyz', { host })).status, 200);
    }
    assert.ok(await isHeld(server, id), 'the lock is still held');
    const taken = await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
    assert.equal(taken.json.total, 0, 'nothing was acquired');
    await waitFor(
      () =>
        server.lines.some(
          (line) => line.includes('"request refused"') && line.includes('"host":"evil.example"'),
        ),
      { what: 'the refusal in the log, with the Host' },
    );
  });
});

describe('--allowed-host, on a wildcard address', () => {
  let server: ServerProcess;
  let open: ServerProcess;
  before(async () => {
    [server, open] = await Promise.all([
      startServerProcess({
        args: [
          '--host',
          '0.0.0.0',
          ...FREE_ARGS,
          '--allowed-host',
          'tracker',
          '--allowed-host',
          '.corp.example',
        ],
      }),
      startServerProcess({ args: FREE_ARGS, env: { TRACKER_ALLOWED_HOSTS: '*' } }),
    ]);
  });
  after(async () => {
    await Promise.all([server?.stop(), open?.stop()]);
  });

  test('the named hosts, a domain and its subdomains, this machine and any IP address are served; others are not', async () => {
    const port = server.httpPort;
    const machine = hostname();
    for (const host of [
      'tracker:8080',
      'TRACKER',
      `tracker.corp.example:${port}`,
      'corp.example',
      `${machine}:${port}`,
      machine.split('.')[0] ?? machine,
      '192.168.1.20:8080',
    ]) {
      assert.equal((await request(port, 'GET', `${API}/locks/list`, { host })).status, 200, `Host: ${host}`);
    }
    for (const host of ['tracker.evil.example', 'evilcorp.example', `evil.example:${port}`, 'trackers']) {
      hostRefused(await request(port, 'GET', `${API}/locks/list`, { host }), `Host: ${host}`);
    }
    assert.ok(
      server.lines.some(
        (line) =>
          line.includes('HOST_NOT_ALLOWED') && line.includes('"tracker"') && line.includes('".corp.example"'),
      ),
      'the start log lists the names answered to',
    );
  });

  test("a proxy's public name given with --allowed-host: its pages' Origin counts as this server's own", async () => {
    const port = server.httpPort;
    const body = JSON.stringify({ service: unique('behind-proxy'), who: 'dashboard' });
    const json = { 'content-type': 'application/json' };
    const fromProxy = await request(
      port,
      'POST',
      `${API}/lock`,
      { ...json, host: `127.0.0.1:${port}`, origin: 'https://tracker.corp.example' },
      body,
    );
    assert.equal(fromProxy.status, 201, JSON.stringify(fromProxy.json));
    crossSiteRefused(
      await request(
        port,
        'POST',
        `${API}/lock`,
        { ...json, host: `127.0.0.1:${port}`, origin: 'https://evil.example' },
        JSON.stringify({ service: unique('behind-proxy'), who: 'evil' }),
      ),
      'another origin',
    );
  });

  test('* (here from TRACKER_ALLOWED_HOSTS) answers to any Host, but still refuses other sites’ changes', async () => {
    const port = open.httpPort;
    assert.equal((await request(port, 'GET', `${API}/locks/list`, { host: 'evil.example' })).status, 200);
    const id = await take(open);
    crossSiteRefused(
      await request(port, 'GET', `${API}/unlock/${id}`, { origin: 'http://evil.example' }),
      'Origin of another site',
    );
    assert.ok(await isHeld(open, id));
  });
});

describe('changes from other sites are refused; curl and same-origin pages are not', () => {
  let server: ServerProcess;
  let port: number;
  before(async () => {
    server = await startServerProcess();
    port = server.httpPort;
  });
  after(async () => {
    await server?.stop();
  });

  test('Origin, Referer or Sec-Fetch-Site of another origin or site: 403 CROSS_SITE_REQUEST, and nothing changes', async () => {
    const id = await take(server);
    const json = { 'content-type': 'application/json' };
    const image = { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'image' };
    const service = unique('never-taken');
    const cases: Array<[string, string, Record<string, string>, string?]> = [
      ['GET', `${API}/unlock/${id}`, { origin: 'http://evil.example' }],
      ['GET', `${API}/unlock/${id}`, image],
      ['GET', `${API}/unlock/${id}`, { ...image, 'sec-fetch-site': 'same-site' }],
      ['GET', `${API}/unlock/${id}`, { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' }],
      ['GET', `${API}/unlock/${id}`, { referer: 'http://evil.example/page.html' }],
      ['HEAD', `${API}/unlock/${id}`, { 'sec-fetch-site': 'cross-site' }],
      ['POST', `${API}/unlock/${id}`, { origin: 'http://evil.example', 'content-type': 'text/plain' }, ''],
      ['POST', `${API}/unlock/${id}`, { ...json, origin: 'null' }],
      ['POST', `${API}/unlock/${id}`, { ...json, origin: `http://127.0.0.1:${port + 1}` }],
      ['POST', `${API}/unlock/${id}`, { ...json, origin: 'http://127.0.0.1' }],
      [
        'POST',
        `${API}/lock/${id}/renew`,
        { origin: 'http://evil.example', 'content-type': 'text/plain' },
        '{}',
      ],
      [
        'POST',
        `${API}/lock/${id}/force-release`,
        { ...json, 'sec-fetch-site': 'cross-site' },
        '{"reason":"x"}',
      ],
      ['DELETE', `${API}/lock/${id}`, { origin: 'http://evil.example' }],
      [
        'POST',
        `${API}/lock`,
        { ...json, origin: 'http://evil.example' },
        JSON.stringify({ service, who: 'w' }),
      ],
    ];
    for (const [method, path, headers, body] of cases) {
      const what = `${method} ${path} ${JSON.stringify(headers)}`;
      const answer = await request(port, method, path, headers, body);
      if (method === 'HEAD') assert.equal(answer.status, 403, what);
      else crossSiteRefused(answer, what);
      if (method !== 'HEAD' && path.includes('unlock')) assert.equal(answer.json.success, false, what);
    }
    assert.ok(await isHeld(server, id), 'the lock is still held');
    assert.deepEqual(await eventsOf(server, id), ['acquired'], 'not renewed, not released');
    assert.equal((await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`)).json.total, 0);
    await call(server.baseUrl, 'DELETE', `${API}/lock/${id}`);
  });

  test('a POST without a body must carry a header no form can send', async () => {
    const id = await take(server);
    for (const [path, headers] of [
      [`${API}/unlock/${id}`, {}],
      [`${API}/unlock/${id}`, { 'content-type': 'application/x-www-form-urlencoded' }],
      [`${API}/unlock/${id}`, { 'content-type': 'text/plain' }],
      [`${API}/lock/${id}/renew`, {}],
      [`${API}/lock/${id}/force-release`, { 'x-tracker': '' }],
    ] as const) {
      const answer = await request(port, 'POST', path, headers);
      crossSiteRefused(answer, `POST ${path} ${JSON.stringify(headers)}`);
      assert.match(String(answer.json.error), /Content-Type: application\/json/);
    }
    assert.deepEqual(await eventsOf(server, id), ['acquired']);
    assert.equal((await request(port, 'POST', `${API}/lock/${id}/renew`, { 'x-tracker': '1' })).status, 200);
    const typed = await request(port, 'POST', `${API}/lock/${id}/renew`, {
      'content-type': 'application/json',
    });
    assert.equal(typed.status, 200);
    const bearer = await request(port, 'POST', `${API}/lock/${id}/force-release`, {
      authorization: 'Bearer x',
    });
    assert.equal(bearer.status, 200, 'an Authorization header is enough (authentication off ignores it)');
    assert.deepEqual(await eventsOf(server, id), ['acquired', 'renewed', 'renewed', 'force-released']);
    // A browser page that says it is this server's own (the API docs' "Try it out") needs no more.
    const own = await take(server);
    const fromDocs = await request(port, 'POST', `${API}/lock/${own}/renew`, {
      origin: `http://127.0.0.1:${port}`,
      'sec-fetch-site': 'same-origin',
    });
    assert.equal(fromDocs.status, 200, JSON.stringify(fromDocs.json));
    const sameOriginOnly = await request(port, 'POST', `${API}/unlock/${own}`, {
      'sec-fetch-site': 'same-origin',
    });
    assert.equal(sameOriginOnly.status, 200, JSON.stringify(sameOriginOnly.json));
  });

  test('what curl sends passes (no Origin, no Sec-Fetch-*), as do same-origin pages; reads are not refused', async () => {
    const base = `http://localhost:${port}${API}`;
    const curl = async (...args: string[]) => {
      const run = await runToExit('curl', ['-sS', '--max-time', '10', '-w', '\n%{http_code}', ...args], {
        timeoutMs: 15_000,
      });
      assert.equal(run.code, 0, run.stderr);
      return Number(run.stdout.trim().split('\n').at(-1));
    };
    // The guide's release, and the README's renew and release, exactly as written there.
    assert.equal(await curl(`${base}/unlock/${await take(server)}`), 200);
    const renewed = await take(server);
    assert.equal(
      await curl('-X', 'POST', '-H', 'Content-Type: application/json', `${base}/lock/${renewed}/renew`),
      200,
    );
    assert.equal(await curl('-X', 'DELETE', `${base}/lock/${renewed}`), 200);

    const sameOrigin = {
      'content-type': 'application/json',
      host: `localhost:${port}`,
      origin: `http://localhost:${port}`,
      'sec-fetch-site': 'same-origin',
      'sec-fetch-mode': 'cors',
    };
    const body = JSON.stringify({ service: unique('same-origin'), who: 'dashboard' });
    const created = await request(port, 'POST', `${API}/lock`, sameOrigin, body);
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const typed = await request(port, 'GET', `${API}/unlock/${created.json.id}`, {
      'sec-fetch-site': 'none',
      'sec-fetch-mode': 'navigate',
    });
    assert.equal(typed.status, 200, 'a URL typed in the address bar (Sec-Fetch-Site: none)');

    const read = await request(port, 'GET', `${API}/locks/list`, {
      origin: 'http://evil.example',
      'sec-fetch-site': 'cross-site',
    });
    assert.equal(read.status, 200, 'a read is not refused...');
    assert.equal(
      read.headers['access-control-allow-origin'],
      undefined,
      '...and no CORS lets the page see it',
    );
  });
});

describe('Chromium: pages of another site, and a rebinding page, cannot touch locks', () => {
  let server: ServerProcess;
  let browser: Browser;
  let attacker: http.Server;
  let page = '';
  before(async () => {
    server = await startServerProcess();
    // evil.test and rebound.test resolve to this machine, as an attacker's DNS would make them.
    browser = await launchBrowser([
      '--host-resolver-rules=MAP evil.test 127.0.0.1, MAP rebound.test 127.0.0.1',
    ]);
    attacker = http.createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(page);
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    await browser?.close();
    await new Promise((resolve) => attacker?.close(resolve));
    await server?.stop();
  });

  test('an <img>, forms and no-cors fetches from another site release, renew and force-release nothing', async () => {
    const ids = await Promise.all(Array.from({ length: 6 }, () => take(server)));
    const [img, form, textForm, fetched, forced, renewed] = ids as [
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    const target = `${server.baseUrl}${API}`;
    // Each attempt reports when the browser is done with it: the image's load or error, the
    // frame a form posts into loading the answer, the fetch settling.
    page = `<!doctype html><title>cute cats</title>
<iframe name="sink1" id="sink1"></iframe><iframe name="sink2" id="sink2"></iframe>
<form id="f1" method="POST" action="${target}/unlock/${form}" target="sink1"></form>
<form id="f2" method="POST" enctype="text/plain" action="${target}/lock/${textForm}/force-release" target="sink2">
<input name='{"reason":"pwned","x":"' value='"}'></form>
<script>
window.done = {};
const report = (what) => (outcome) => { window.done[what] = outcome; };
const image = new Image();
image.onload = () => report('img')('load');
image.onerror = () => report('img')('error');
image.src = '${target}/unlock/${img}';
document.getElementById('sink1').onload = () => report('form')('load');
document.getElementById('sink2').onload = () => report('text-form')('load');
document.getElementById('f1').submit();
document.getElementById('f2').submit();
for (const [what, path] of [['unlock', '/unlock/${fetched}'], ['force-release', '/lock/${forced}/force-release'], ['renew', '/lock/${renewed}/renew']]) {
  fetch('${target}' + path, { method: 'POST', mode: 'no-cors' }).then(() => report(what)('sent'), () => report(what)('failed'));
}
</script>`;
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      const { port } = attacker.address() as AddressInfo;
      await tab.goto(`http://evil.test:${port}/`);
      const done = await waitFor(
        async () => {
          const outcomes = (await tab.evaluate('window.done')) as Record<string, string>;
          return Object.keys(outcomes).length === 6 ? outcomes : false;
        },
        { what: 'the page to finish its six attempts' },
      );
      assert.deepEqual(Object.keys(done).sort(), [
        'force-release',
        'form',
        'img',
        'renew',
        'text-form',
        'unlock',
      ]);
      // The browser had every answer: what the server did is done.
      for (const id of ids) {
        assert.ok(await isHeld(server, id), `lock ${id} is still held`);
        assert.deepEqual(await eventsOf(server, id), ['acquired'], `lock ${id}: nothing happened to it`);
      }
      // Every attempt reached the server and was refused there (not lost on the way).
      await waitFor(
        () =>
          server.lines.filter(
            (line) => line.includes('"request refused"') && line.includes('CROSS_SITE_REQUEST'),
          ).length >= 6,
        { what: 'six refusals in the log' },
      );
    } finally {
      await context.close();
    }
  });

  test('a page whose name was made to resolve to the server (DNS rebinding) can neither read nor change', async () => {
    const service = unique('rebinding');
    const context = await browser.newContext();
    try {
      const tab = await context.newPage();
      const rebound = await tab.goto(`http://rebound.test:${server.httpPort}/`);
      assert.equal(rebound?.status(), 403, 'the dashboard is not served to the rebound name');
      const statuses = (await tab.evaluate(`(async () => {
        const read = await fetch('/api/v1alpha1/locks/list');
        const write = await fetch('/api/v1alpha1/lock', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ service: '${service}', who: 'rebinder' }),
        });
        return [read.status, (await read.json()).code, write.status, (await write.json()).code];
      })()`)) as [number, string, number, string];
      assert.deepEqual(statuses, [403, 'HOST_NOT_ALLOWED', 403, 'HOST_NOT_ALLOWED']);
      const own = await tab.goto(`${server.baseUrl}${API}/locks/list`);
      assert.equal(own?.status(), 200, 'the same server by its address is served');
    } finally {
      await context.close();
    }
    assert.equal((await call(server.baseUrl, 'GET', `${API}/locks/list?service=${service}`)).json.total, 0);
  });
});
