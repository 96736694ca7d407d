import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  appendFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Fastify from 'fastify';
import type { Browser, Page, Request } from 'playwright-core';
import { addToken, revokeToken } from '../src/auth/token-file.js';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import { systemClock } from '../src/core/clock.js';
import { DASHBOARD_CSP, hashedAssetName, registerDashboard } from '../src/http/dashboard.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { browserPerFile, openPage, type WatchedPage } from './support/browser.js';
import { createTestService } from './support/lock-service.js';
import { API, call } from './support/rest.js';
import {
  FREE_ARGS,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/*
 * The dashboard in a real browser (Debian's Chromium through playwright-core) against the
 * real compiled server: live updates from locks taken and released with curl, the force
 * release, the service page's history, user text shown as text, the bearer token on every
 * request, and 5,000 held locks. Screenshots go to test-artifacts/ (and docs/dashboard.png,
 * the README's picture, when it is missing or TRACKER_UPDATE_SCREENSHOTS=1).
 */

const ARTIFACTS = join(ROOT, 'test-artifacts');
const DOCS_SCREENSHOT = join(ROOT, 'docs/dashboard.png');
/** The promise: a change shows within a second. */
const LIVE_MS = 1000;
/** The waiters column of the locks table (service, who, owner, held, expires, token, waiters). */
const WAITERS = 6;

interface LockJson {
  id: string;
  service: string;
  who: string;
  fencingToken: number;
  waiters: number;
}

/** A real `curl` child process, as an operator would run it. */
async function curl(method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const args = ['-sS', '--max-time', '10', '-X', method, '-w', '\n%{http_code}'];
  if (body !== undefined) args.push('-H', 'Content-Type: application/json', '-d', JSON.stringify(body));
  args.push(url);
  const run = await runToExit('curl', args, { timeoutMs: 15_000 });
  assert.equal(run.code, 0, `curl failed: ${run.stderr}`);
  const cut = run.stdout.lastIndexOf('\n');
  const text = run.stdout.slice(0, cut);
  return { status: Number(run.stdout.slice(cut + 1)), json: text === '' ? null : JSON.parse(text) };
}

async function curlLock(base: string, body: Record<string, unknown>): Promise<LockJson> {
  const { status, json } = await curl('POST', `${base}${API}/lock`, body);
  assert.equal(status, 201, JSON.stringify(json));
  return json as LockJson;
}

/** The options of call() that send `token` as a bearer token (none: no header). */
function bearer(token?: string): { headers?: Record<string, string> } {
  return token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } };
}

async function acquire(base: string, body: Record<string, unknown>, token?: string): Promise<LockJson> {
  const { status, json } = await call(base, 'POST', `${API}/lock`, body, bearer(token));
  assert.equal(status, 201, JSON.stringify(json));
  return json as unknown as LockJson;
}

/**
 * A request that waits in the service's queue; `stop()` hangs up (which leaves the queue)
 * unless it was granted, and returns the granted lock if any.
 */
function waitInLine(base: string, service: string, who: string, token?: string) {
  const controller = new AbortController();
  const reply = call(
    base,
    'POST',
    `${API}/lock`,
    { service, who, waitSeconds: 120 },
    { ...bearer(token), signal: controller.signal },
  );
  const settled = reply.then(
    (answer) => (answer.status === 201 ? (answer.json as unknown as LockJson) : undefined),
    () => undefined,
  );
  return {
    settled,
    async stop(): Promise<LockJson | undefined> {
      controller.abort();
      return settled;
    },
  };
}

/** The file's one Chromium: each describe's tests open their own contexts in it. */
const chromium = browserPerFile();
/** Clean-ups left for the end of the file, after the browser is closed. */
const atEnd: Array<() => Promise<void>> = [];
after(async () => {
  await chromium.close();
  for (const cleanUp of atEnd) await cleanUp();
});

/** The content-hashed script and stylesheet a built index.html loads. */
function builtAssets(html: string): { script: string; styles: string } {
  const script = /<script type="module" src="assets\/(app-[0-9a-f]{16}\.js)"><\/script>/.exec(html)?.[1];
  const styles = /<link rel="stylesheet" href="assets\/(styles-[0-9a-f]{16}\.css)" \/>/.exec(html)?.[1];
  assert.ok(script && styles, 'index.html loads app-<hash>.js and styles-<hash>.css');
  return { script, styles };
}

const rowOf = (page: Page, id: string) => page.locator(`#locks-body tr[data-lock-id="${id}"]`);
/** The waiters cell of a lock's row, once it reads `count` (wait for it with waitFor()). */
const waitersOf = (page: Page, id: string, count: number) =>
  rowOf(page, id)
    .locator('td')
    .nth(WAITERS)
    .filter({ hasText: new RegExp(`^${count}$`) });

async function openDashboard(browser: Browser, base: string, hash = ''): Promise<WatchedPage> {
  const watched = await openPage(browser);
  await watched.page.goto(`${base}/${hash}`);
  await watched.page.locator('#status.live').waitFor();
  return watched;
}

/** Answers the sign-in dialog with `token`, and waits for it to close. */
async function signIn(page: Page, token: string): Promise<void> {
  await page.locator('#signin-dialog').waitFor();
  await page.locator('#signin-token').fill(token);
  await page.locator('#signin-submit').click();
  await page.locator('#signin-dialog').waitFor({ state: 'hidden' });
}

/** A JSON refusal, as the server sends it, for page.route(). */
function refusal(status: number, code: string, error: string, headers: Record<string, string> = {}) {
  return { status, headers, contentType: 'application/json', body: JSON.stringify({ error, code }) };
}

/** Console errors other than the ones a test provoked on purpose (failed requests). */
function unexpected(errors: readonly string[]): string[] {
  return errors.filter((error) => !error.includes('Failed to load resource'));
}

describe('registerDashboard', () => {
  test('without a build, / is a 503 that says to run npm run build', async () => {
    const dir = tempDir();
    const app = Fastify();
    try {
      registerDashboard(app, { assetsDir: dir.path });
      const reply = await app.inject({ method: 'GET', url: '/' });
      assert.equal(reply.statusCode, 503);
      assert.equal(reply.json().code, 'DASHBOARD_NOT_BUILT');
      assert.match(reply.json().error, /npm run build/);
      assert.equal((await app.inject({ method: 'GET', url: '/assets/app.js' })).statusCode, 404);
    } finally {
      await app.close();
      dir.remove();
    }
  });

  test('serves the files found at start, nothing else, with their types and cache headers', async () => {
    const dir = tempDir();
    const app = Fastify();
    try {
      const script = hashedAssetName('app.js', 'export {};');
      const styles = hashedAssetName('styles.css', 'body{}');
      writeFileSync(
        join(dir.path, 'index.html'),
        `<!doctype html><title>t</title><link rel="stylesheet" href="assets/${styles}" /><script type="module" src="assets/${script}"></script>`,
      );
      writeFileSync(join(dir.path, script), 'export {};');
      writeFileSync(join(dir.path, styles), 'body{}');
      // Unhashed, stale (a name whose hash is not its content's), and source maps: not served.
      writeFileSync(join(dir.path, 'app.js'), 'export {};');
      writeFileSync(join(dir.path, 'styles.css'), 'body{}');
      writeFileSync(join(dir.path, hashedAssetName('old.js', 'export {};')), 'export const changed = 1;');
      writeFileSync(join(dir.path, 'app.js.map'), '{}');
      writeFileSync(join(dir.path, hashedAssetName('app.js.map', '{}')), '{}');
      mkdirSync(join(dir.path, 'nested'));
      writeFileSync(join(dir.path, 'nested/secret.txt'), 'no');
      registerDashboard(app, { assetsDir: dir.path });
      // Files added later are not served: the list is fixed at start.
      const late = hashedAssetName('late.js', 'export {};');
      writeFileSync(join(dir.path, late), 'export {};');

      const html = await app.inject({ method: 'GET', url: '/' });
      assert.equal(html.statusCode, 200);
      assert.equal(html.headers['content-type'], 'text/html; charset=utf-8');
      assert.equal(html.headers['content-security-policy'], DASHBOARD_CSP);
      assert.equal(html.headers['cache-control'], 'no-store');
      const types: Record<string, string> = {
        [script]: 'text/javascript; charset=utf-8',
        [styles]: 'text/css; charset=utf-8',
      };
      for (const [file, type] of Object.entries(types)) {
        const reply = await app.inject({ method: 'GET', url: `/assets/${file}` });
        assert.equal(reply.statusCode, 200, file);
        assert.equal(reply.headers['content-type'], type, file);
        assert.equal(reply.headers['cache-control'], 'public, max-age=31536000, immutable', file);
        assert.equal(reply.headers['x-content-type-options'], 'nosniff', file);
        assert.equal(reply.headers['content-security-policy'], undefined, file);
      }
      for (const file of [
        'app.js',
        'styles.css',
        hashedAssetName('old.js', 'export {};'),
        'app.js.map',
        hashedAssetName('app.js.map', '{}'),
        late,
        'nested',
        'nested%2Fsecret.txt',
        `..%2F${script}`,
        'index.html',
      ]) {
        assert.equal((await app.inject({ method: 'GET', url: `/assets/${file}` })).statusCode, 404, file);
      }
    } finally {
      await app.close();
      dir.remove();
    }
  });

  test('an index.html that loads an unhashed or missing asset is not a build: 503', async () => {
    const dir = tempDir();
    const app = Fastify();
    try {
      // What web/index.html is before the build: it loads assets/app.js, which is not served.
      writeFileSync(join(dir.path, 'index.html'), '<script type="module" src="assets/app.js"></script>');
      writeFileSync(join(dir.path, 'app.js'), 'export {};');
      registerDashboard(app, { assetsDir: dir.path });
      const reply = await app.inject({ method: 'GET', url: '/' });
      assert.equal(reply.statusCode, 503);
      assert.equal(reply.json().code, 'DASHBOARD_NOT_BUILT');
      assert.match(reply.json().error, /loads assets\/app\.js, not a content-hashed file.*npm run build/);
    } finally {
      await app.close();
      dir.remove();
    }
  });

  test("an asset's name carries its content's hash: the same content, the same name; other content, another", () => {
    const name = hashedAssetName('app.js', 'export const a = 1;');
    assert.match(name, /^app-[0-9a-f]{16}\.js$/);
    assert.equal(hashedAssetName('app.js', Buffer.from('export const a = 1;')), name);
    assert.notEqual(hashedAssetName('app.js', 'export const a = 2;'), name);
    assert.match(hashedAssetName('styles.css', 'body{}'), /^styles-[0-9a-f]{16}\.css$/);
  });
});

describe('the dashboard build (scripts/build-web.mjs)', () => {
  /** Builds `web` into `out` with the real build script; the names in the built index.html. */
  async function buildInto(
    web: string,
    out: string,
  ): Promise<{ files: string[]; script: string; styles: string }> {
    const run = await runToExit(
      process.execPath,
      [join(ROOT, 'scripts/build-web.mjs'), '--web', web, '--out', out],
      {
        timeoutMs: 60_000,
      },
    );
    assert.equal(run.code, 0, run.stderr);
    const html = readFileSync(join(out, 'index.html'), 'utf8');
    const script = /src="assets\/(app-[0-9a-f]{16}\.js)"/.exec(html)?.[1];
    const styles = /href="assets\/(styles-[0-9a-f]{16}\.css)"/.exec(html)?.[1];
    assert.ok(script && styles, `index.html loads hashed assets: ${html.slice(0, 600)}`);
    assert.doesNotMatch(html, /"assets\/(app\.js|styles\.css)"/, 'no unhashed name left');
    const files = readdirSync(out).sort();
    assert.deepEqual(files, [script, 'index.html', styles].sort(), 'nothing else is written, no source map');
    assert.equal(
      hashedAssetName('app.js', readFileSync(join(out, script))),
      script,
      'the server takes the name',
    );
    assert.equal(hashedAssetName('styles.css', readFileSync(join(out, styles))), styles);
    return { files, script, styles };
  }

  test('a changed file gets a new name; an unchanged one keeps its name', async () => {
    const dir = tempDir();
    try {
      const web = join(dir.path, 'web');
      cpSync(join(ROOT, 'web'), web, { recursive: true });
      // The one module of src/ the dashboard bundles: durations as people write them.
      mkdirSync(join(dir.path, 'src'));
      cpSync(join(ROOT, 'src/duration.ts'), join(dir.path, 'src/duration.ts'));
      const first = await buildInto(web, join(dir.path, 'out1'));
      const again = await buildInto(web, join(dir.path, 'out2'));
      assert.deepEqual(again, first, 'the same sources, the same names');

      appendFileSync(join(web, 'styles.css'), '\n.changed-for-the-test { color: red; }\n');
      const newStyles = await buildInto(web, join(dir.path, 'out3'));
      assert.notEqual(newStyles.styles, first.styles, 'styles.css changed: a new name');
      assert.equal(newStyles.script, first.script, 'app.js unchanged: the same name');

      appendFileSync(join(web, 'app.ts'), "\ndocument.documentElement.dataset.changedForTheTest = 'yes';\n");
      const newScript = await buildInto(web, join(dir.path, 'out4'));
      assert.notEqual(newScript.script, first.script, 'app.ts changed: a new bundle name');
      assert.equal(newScript.styles, newStyles.styles);
    } finally {
      dir.remove();
    }
  });
});

describe('dashboard', () => {
  let server: ServerProcess;
  let browser: Browser;
  let base: string;

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    [server, browser] = await Promise.all([startServerProcess(), chromium.get()]);
    base = server.baseUrl;
  });
  after(async () => {
    await server?.stop();
  });

  test('GET / serves the built page under a strict CSP; /assets serves only built files', async () => {
    const html = await fetch(`${base}/`);
    assert.equal(html.status, 200);
    assert.match(html.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(html.headers.get('cache-control'), 'no-store');
    const csp = html.headers.get('content-security-policy') ?? '';
    for (const directive of [
      "default-src 'self'",
      "script-src 'self'",
      "style-src 'self'",
      "object-src 'none'",
      "base-uri 'none'",
      "frame-ancestors 'none'",
      "connect-src 'self'",
    ]) {
      assert.ok(csp.includes(directive), `CSP has ${directive}: ${csp}`);
    }
    const text = await html.text();
    assert.doesNotMatch(text, /https?:\/\//, 'nothing from another origin');
    const { script, styles } = builtAssets(text);

    const scriptReply = await fetch(`${base}/assets/${script}`);
    assert.equal(scriptReply.status, 200);
    assert.match(scriptReply.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.equal(scriptReply.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(hashedAssetName('app.js', Buffer.from(await scriptReply.arrayBuffer())), script);
    const etag = scriptReply.headers.get('etag');
    assert.ok(etag);
    assert.equal(
      (await fetch(`${base}/assets/${script}`, { headers: { 'if-none-match': etag } })).status,
      304,
    );
    const stylesReply = await fetch(`${base}/assets/${styles}`);
    assert.match(stylesReply.headers.get('content-type') ?? '', /^text\/css/);
    assert.equal(stylesReply.headers.get('cache-control'), 'public, max-age=31536000, immutable');

    for (const path of [
      '/assets/app.js',
      '/assets/styles.css',
      '/assets/app.js.map',
      `/assets/${script}.map`,
      '/assets/nothing.js',
      '/assets/..%2Fpackage.json',
      '/assets/%2E%2E%2Findex.html',
    ]) {
      const { status, json } = await call(base, 'GET', path);
      assert.equal(status, 404, path);
      assert.equal(json.code, 'NOT_FOUND', path);
    }
  });

  test('a lock taken with curl appears within a second; its release removes it within a second', async (t) => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    try {
      const lock = await curlLock(base, {
        service: 'production-deployment',
        who: 'ci-pipeline-123',
        ttlSeconds: 600,
      });
      let started = performance.now();
      await rowOf(page, lock.id).waitFor({ timeout: LIVE_MS });
      t.diagnostic(`lock visible ${Math.round(performance.now() - started)} ms after curl returned`);
      const row = rowOf(page, lock.id);
      assert.equal(await row.locator('td.service').textContent(), 'production-deployment');
      assert.equal(await row.locator('td.who').textContent(), 'ci-pipeline-123');
      const cells = await row.locator('td').allTextContents();
      assert.equal(cells[2], '—', 'no owner without authentication');
      assert.match(cells[3] ?? '', /^\d+s$/, 'held for');
      assert.match(cells[4] ?? '', /^9m \d\ds$|^10m 00s$/, 'expires in');
      assert.equal(cells[5], String(lock.fencingToken), 'fencing token');
      assert.equal(cells[6], '0', 'waiters');
      assert.match((await page.locator('#count').textContent()) ?? '', /^1 held lock$/);

      const released = await curl('GET', `${base}${API}/unlock/${lock.id}`);
      assert.equal(released.status, 200);
      started = performance.now();
      await rowOf(page, lock.id).waitFor({ state: 'detached', timeout: LIVE_MS });
      t.diagnostic(`lock gone ${Math.round(performance.now() - started)} ms after curl returned`);
      assert.equal(await page.locator('#locks-body tr.empty').textContent(), 'No locks are held.');

      // The waiters column follows the queue.
      const held = await curlLock(base, { service: 'nightly-report', who: 'cron@report-01' });
      await rowOf(page, held.id).waitFor({ timeout: LIVE_MS });
      const waiter = waitInLine(base, 'nightly-report', 'cron@report-02');
      await waitersOf(page, held.id, 1).waitFor({ timeout: LIVE_MS * 3 });
      assert.equal(await waiter.stop(), undefined, 'the waiter hung up before being granted');
      await waitersOf(page, held.id, 0).waitFor({ timeout: LIVE_MS * 3 });
      await curl('DELETE', `${base}${API}/lock/${held.id}`);
      await rowOf(page, held.id).waitFor({ state: 'detached', timeout: LIVE_MS });
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
    }
  });

  test('force release asks for confirmation and a reason; the service page shows the reason', async (t) => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    const service = 'orders-db-migration';
    const lock = await curlLock(base, { service, who: 'migrate-job-42', ttlSeconds: 3600 });
    const waiter = waitInLine(base, service, 'migrate-job-43');
    try {
      await waitersOf(page, lock.id, 1).waitFor({ timeout: LIVE_MS * 3 });
      const dialog = page.locator('#force-dialog');

      // Cancel releases nothing.
      await rowOf(page, lock.id).getByRole('button', { name: 'Force release' }).click();
      await dialog.waitFor();
      const details = (await page.locator('#force-details').textContent()) ?? '';
      assert.ok(details.includes(service) && details.includes('migrate-job-42'), details);
      assert.ok(details.includes(String(lock.fencingToken)), details);
      await page.locator('#force-cancel').click();
      await dialog.waitFor({ state: 'hidden' });
      assert.equal(
        (await call(base, 'GET', `${API}/lock/${lock.id}`)).status,
        200,
        'still held after cancel',
      );

      // No reason, no release.
      await rowOf(page, lock.id).getByRole('button', { name: 'Force release' }).click();
      await page.locator('#force-confirm').click();
      assert.equal(await dialog.isVisible(), true, 'the dialog stays open without a reason');
      assert.equal(
        (await call(base, 'GET', `${API}/lock/${lock.id}`)).status,
        200,
        'still held without a reason',
      );

      const reason = 'runner died mid-migration; approved by @ops (INC-2210)';
      await page.locator('#force-reason').fill(reason);
      const started = performance.now();
      await page.locator('#force-confirm').click();
      await dialog.waitFor({ state: 'hidden' });
      await rowOf(page, lock.id).waitFor({ state: 'detached', timeout: LIVE_MS });
      t.diagnostic(`force-released lock gone ${Math.round(performance.now() - started)} ms after the click`);
      assert.equal((await call(base, 'GET', `${API}/lock/${lock.id}`)).status, 404, 'released on the server');

      // The waiter was granted the lock: it is the new row of the service.
      const granted = await waiter.settled;
      assert.ok(granted, 'the waiter got the lock');
      await rowOf(page, granted.id).waitFor({ timeout: LIVE_MS });
      assert.equal(await rowOf(page, granted.id).locator('td.who').textContent(), 'migrate-job-43');

      // The service page: holder, history with the reason, and the timeline.
      await rowOf(page, granted.id).locator('td.service a').click();
      await page.locator('#service-view').waitFor();
      assert.equal(page.url(), `${base}/#/services/${service}`);
      assert.equal(await page.locator('#service-title').textContent(), service);
      await page.locator('#holder .holder-who').filter({ hasText: 'migrate-job-43' }).waitFor();
      const forced = page.locator('#events-body tr', { has: page.locator('.badge.force-released') });
      await forced.waitFor();
      const cells = await forced.locator('td').allTextContents();
      assert.equal(cells[2], 'migrate-job-42');
      assert.equal(cells[5], reason);
      assert.match(cells[3] ?? '', /^\d/, 'held for');
      const types = await page.locator('#events-body .badge').allTextContents();
      assert.deepEqual(
        types.slice(0, 5),
        ['acquired', 'dequeued', 'force-released', 'queued', 'acquired'],
        'newest first',
      );
      const bars = await page.locator('#timeline .bar').allTextContents();
      assert.deepEqual(bars, ['migrate-job-42', 'migrate-job-43']);
      assert.match(
        (await page.locator('#timeline .bar.force-released').getAttribute('title')) ?? '',
        /INC-2210/,
      );
      await page.locator('#queue').filter({ hasText: 'Nobody is waiting.' }).waitFor();

      // The 7-day range shows the same holds.
      await page.locator('[data-range="7d"]').click();
      await page.locator('[data-range="7d"][aria-pressed="true"]').waitFor({ timeout: 2000 });
      await page.locator('#timeline .bar.force-released').waitFor();
      assert.equal((await page.locator('#timeline .tick').count()) >= 7, true, 'a tick per day');

      // Back to the table; the filter survives.
      await page.locator('.crumbs a').click();
      await page.locator('#locks-view').waitFor();
      await curl('DELETE', `${base}${API}/lock/${granted.id}`);
      await rowOf(page, granted.id).waitFor({ state: 'detached', timeout: LIVE_MS });
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await waiter.stop();
      await watched.close();
    }
  });

  test('a note and a link show beside the holder, as text, and a changed note shows live', async () => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    const note = '<img src=n onerror=alert(5)> deploying v2';
    const link = 'https://ci.example.com/acme/app/actions/runs/42?attempt=1&x=<b>';
    const service = `noted-${randomUUID().slice(0, 8)}`;
    const lock = await curlLock(base, { service, who: 'ci', note, link });
    try {
      const row = rowOf(page, lock.id);
      await row.waitFor({ timeout: LIVE_MS });
      assert.equal(await row.locator('td.who .note').textContent(), note);
      const anchor = row.locator('td.who a.lock-link');
      assert.equal(await anchor.getAttribute('href'), link);
      assert.equal(await anchor.getAttribute('target'), '_blank');
      assert.equal(await anchor.getAttribute('rel'), 'noopener noreferrer');
      // The holder's change reaches the row through the watch stream (a `noted` event).
      const patched = await curl('PATCH', `${base}${API}/lock/${lock.id}`, { note: 'almost done' });
      assert.equal(patched.status, 200, JSON.stringify(patched.json));
      await row.locator('td.who .note', { hasText: 'almost done' }).waitFor({ timeout: LIVE_MS });
      await page.goto(`${base}/#/services/${encodeURIComponent(service)}`);
      await page.locator('.holder-note').waitFor();
      assert.equal(await page.locator('.holder-note').textContent(), 'almost done');
      assert.equal(await page.locator('a.holder-link').getAttribute('href'), link);
      assert.equal(await page.locator('a.holder-link').textContent(), link);
      const noted = page.locator('#events-body tr', { has: page.locator('.badge.noted') });
      await noted.waitFor({ timeout: LIVE_MS });
      assert.equal(await noted.locator('td.who .note').textContent(), 'almost done');
      const acquired = page.locator('#events-body tr', { has: page.locator('.badge.acquired') });
      assert.equal(await acquired.locator('td.who .note').textContent(), note, 'as it was then');
      const injected = await page.evaluate(`document.querySelectorAll('img, b').length`);
      assert.equal(injected, 0);
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await curl('GET', `${base}${API}/unlock/${lock.id}`);
      await watched.close();
    }
  });

  test('Steal takes a held lock at once, with a reason; Reserve takes a free service for a while', async () => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    const service = `stolen-${randomUUID().slice(0, 8)}`;
    const lock = await curlLock(base, { service, who: 'nightly-build', ttlSeconds: 3600 });
    const dialog = page.locator('#take-dialog');
    try {
      await rowOf(page, lock.id).waitFor({ timeout: LIVE_MS });
      // The service page offers Steal next to Force release.
      await page.goto(`${base}/#/services/${encodeURIComponent(service)}`);
      await page.locator('.holder .buttons-row').getByRole('button', { name: 'Steal' }).click();
      await dialog.waitFor();
      assert.ok(((await page.locator('#take-details').textContent()) ?? '').includes('nightly-build'));
      await page.locator('#take-who').fill('oncall-ana');
      await page.locator('#take-note').fill('hotfix for INC-7');
      // No reason, no steal.
      await page.locator('#take-confirm').click();
      assert.equal(await page.locator('#take-error').isVisible(), true);
      assert.equal(
        (await call(base, 'GET', `${API}/lock/${lock.id}`)).status,
        200,
        'still held without a reason',
      );
      await page.locator('#take-reason').fill('prod is down');
      await page.locator('#take-confirm').click();
      await dialog.waitFor({ state: 'hidden' });
      await page.locator('.holder-who', { hasText: 'oncall-ana' }).waitFor({ timeout: LIVE_MS });
      assert.equal(await page.locator('.holder-note').textContent(), 'hotfix for INC-7');
      await page.goto(`${base}/#/`);
      await rowOf(page, lock.id).waitFor({ state: 'detached', timeout: LIVE_MS });
      const taken = page.locator('tr.row', { has: page.locator('td.who', { hasText: 'oncall-ana' }) });
      await taken.waitFor({ timeout: LIVE_MS });
      assert.equal(await taken.locator('td.who .note').textContent(), 'hotfix for INC-7');
      const history = (await call(base, 'GET', `${API}/history?service=${service}`)).json as {
        events: Array<{ type: string; reason: string | null; stolenBy: { who: string } | null }>;
      };
      const stolen = history.events.find((event) => event.type === 'stolen');
      assert.equal(stolen?.reason, 'prod is down');
      assert.equal(stolen?.stolenBy?.who, 'oncall-ana');

      // Reserve: a free service's page offers it; the who is remembered from the steal.
      const free = `reserve-${randomUUID().slice(0, 8)}`;
      await page.goto(`${base}/#/services/${encodeURIComponent(free)}`);
      await page.getByRole('button', { name: 'Reserve' }).click();
      await dialog.waitFor();
      assert.equal(await page.locator('#take-who').inputValue(), 'oncall-ana');
      assert.equal(
        await page.locator('#take-reason-field').isVisible(),
        false,
        'a reservation asks no reason',
      );
      await page.locator('#take-ttl').fill('soon');
      await page.locator('#take-confirm').click();
      assert.match((await page.locator('#take-error').textContent()) ?? '', /duration/);
      await page.locator('#take-ttl').fill('2h');
      await page.locator('#take-note').fill('load test window');
      await page.locator('#take-confirm').click();
      await dialog.waitFor({ state: 'hidden' });
      await page.locator('.holder-who', { hasText: 'oncall-ana' }).waitFor({ timeout: LIVE_MS });
      const listed = (await call(base, 'GET', `${API}/locks/list?service=${free}`)).json as {
        locks: Array<{ ttlSeconds: number; note: string; id: string }>;
      };
      assert.deepEqual(
        listed.locks.map((held) => [held.ttlSeconds, held.note]),
        [[7200, 'load test window']],
      );

      // A registered resource with room offers Reserve on the Resources page too.
      const device = `reserve-device-${randomUUID().slice(0, 8)}`;
      assert.equal(
        (await curl('PUT', `${base}${API}/resources/${device}`, { labels: ['phones'] })).status,
        201,
      );
      await page.goto(`${base}/#/resources`);
      await page.getByRole('button', { name: `Reserve ${device}` }).click();
      await dialog.waitFor();
      await page.locator('#take-ttl').fill('30m');
      await page.locator('#take-confirm').click();
      await dialog.waitFor({ state: 'hidden' });
      const onDevice = (await call(base, 'GET', `${API}/locks/list?service=${device}`)).json as {
        locks: Array<{ ttlSeconds: number; who: string; id: string }>;
      };
      assert.deepEqual(
        onDevice.locks.map((held) => [held.ttlSeconds, held.who]),
        [[1800, 'oncall-ana']],
      );
      await call(base, 'GET', `${API}/unlock/${onDevice.locks[0]?.id}`);
      await call(base, 'DELETE', `${API}/resources/${device}`);
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      // Later tests count the held locks: nothing of this one stays.
      for (const name of [service, `reserve-`]) {
        const held = (await call(base, 'GET', `${API}/locks/list?per_page=1000`)).json as {
          locks: Array<{ id: string; service: string }>;
        };
        for (const left of held.locks.filter((one) => one.service.startsWith(name))) {
          await call(base, 'GET', `${API}/unlock/${left.id}`);
        }
      }
      await watched.close();
    }
  });

  test('service, who and reason are shown as text, never as HTML', async () => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    const who = '<img src=x onerror=alert(1)>';
    const service = '<script>alert(2)</script><b>bold</b>';
    const reason = '<img src=y onerror=alert(3)><svg onload=alert(4)>';
    const lock = await curlLock(base, { service, who });
    try {
      const row = rowOf(page, lock.id);
      await row.waitFor({ timeout: LIVE_MS });
      assert.equal(await row.locator('td.who').textContent(), who);
      assert.equal(await row.locator('td.service').textContent(), service);
      // The filter matches the literal text.
      await page.locator('#filter').fill('onerror=alert(1)');
      // The count follows the filter at the next frame: wait for it (bounded), then check.
      await page.locator('#count', { hasText: ' of ' }).waitFor({ timeout: LIVE_MS });
      await row.waitFor();
      assert.equal(await page.locator('#count').textContent(), '1 of 1 held lock');
      await page.locator('#filter').fill('');

      await row.getByRole('button', { name: 'Force release' }).click();
      assert.ok(((await page.locator('#force-details').textContent()) ?? '').includes(who));
      await page.locator('#force-reason').fill(reason);
      await page.locator('#force-confirm').click();
      await row.waitFor({ state: 'detached', timeout: LIVE_MS });
      await page.goto(`${base}/#/services/${encodeURIComponent(service)}`);
      await page.locator('#events-body .badge.force-released').waitFor();
      assert.equal(await page.locator('#service-title').textContent(), service);
      const forced = page.locator('#events-body tr', { has: page.locator('.badge.force-released') });
      assert.equal(await forced.locator('td.who').textContent(), who);
      assert.equal(await forced.locator('td.reason').textContent(), reason);
      assert.equal(await page.locator('#timeline .bar').first().textContent(), who);
      assert.equal(await page.title(), `${service} · Tracker`);

      // Had the page made elements of that text, their handlers would have run by now:
      // images with the injected sources (x and y, which fail to load) are asked for after
      // theirs, and once both have failed a dialog shows. It comes, and it is the only one:
      // no alert() ran (nor was an inline handler run, or refused by the CSP: an error).
      await page.evaluate(
        `Promise.all(['x', 'y'].map((src) => new Promise((resolve) => {
           const image = new Image();
           image.addEventListener('error', resolve);
           image.src = src;
         }))).then(() => alert('sentinel'))`,
      );
      await waitFor(() => watched.dialogs.includes('sentinel'), { what: "the sentinel image's dialog" });
      assert.deepEqual(watched.dialogs, ['sentinel'], 'no alert() ran');
      const injected = await page.evaluate(
        `({ img: document.querySelectorAll('img').length, svg: document.querySelectorAll('svg').length,
           b: document.querySelectorAll('b').length,
           inlineScripts: document.querySelectorAll('script:not([src])').length })`,
      );
      assert.deepEqual(injected, { img: 0, svg: 0, b: 0, inlineScripts: 0 });
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
    }
  });

  test('a 429 is waited out as its Retry-After says: the stream reconnects, a call is repeated', async () => {
    const watched = await openPage(browser);
    const { page } = watched;
    const service = 'rate-limited-page';
    const lock = await acquire(base, { service, who: 'backoff-check' });
    const watches: number[] = [];
    const histories: number[] = [];
    try {
      await page.route('**/api/v1alpha1/watch*', async (route) => {
        watches.push(performance.now());
        if (watches.length === 1) {
          await route.fulfill(
            refusal(429, 'RATE_LIMITED', 'too many requests; slow down', { 'retry-after': '2' }),
          );
        } else await route.continue();
      });
      await page.route('**/api/v1alpha1/history*', async (route) => {
        histories.push(performance.now());
        if (histories.length === 1) {
          await route.fulfill(
            refusal(429, 'RATE_LIMITED', 'too many requests; slow down', { 'retry-after': '1' }),
          );
        } else await route.continue();
      });
      await page.goto(`${base}/#/services/${service}`);
      await page
        .locator('#status')
        .filter({ hasText: /^Rate limited, retrying in 2 s$/ })
        .waitFor();
      await page.locator('#status.live').waitFor({ timeout: 5000 });
      await page.locator('#holder .holder-who').filter({ hasText: 'backoff-check' }).waitFor();
      await page.locator('#events-body .badge.acquired').waitFor({ timeout: 5000 });
      assert.equal(watches.length, 2, 'one reconnection');
      assert.equal(histories.length, 2, 'one repeated call');
      const [watch1 = 0, watch2 = 0] = watches;
      const [history1 = 0, history2 = 0] = histories;
      assert.ok(watch2 - watch1 >= 1900, `the stream waited ${Math.round(watch2 - watch1)} ms, not 2 s`);
      assert.ok(history2 - history1 >= 900, `the call waited ${Math.round(history2 - history1)} ms, not 1 s`);
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
      await call(base, 'DELETE', `${API}/lock/${lock.id}`);
    }
  });

  test('the bearer token goes with every request, the watch stream too; a dropped stream resumes with Last-Event-ID', async () => {
    const watched = await openPage(browser);
    const { page } = watched;
    const requests: Request[] = [];
    page.on('request', (request) => {
      if (request.url().includes(API)) requests.push(request);
    });
    try {
      // The first stream is a real snapshot that ends at once: the page must reconnect with
      // the snapshot's id and receive what happened in between.
      const snapshot = await firstMessage(base);
      const lastId = /^id: ?(.*)$/m.exec(snapshot)?.[1];
      assert.ok(lastId, snapshot);
      let watches = 0;
      let between: LockJson | undefined;
      await page.route('**/api/v1alpha1/watch*', async (route) => {
        watches++;
        if (watches === 1) {
          await route.fulfill({ status: 200, contentType: 'text/event-stream', body: snapshot });
          return;
        }
        if (watches === 2) between = await acquire(base, { service: 'between-streams', who: 'resume-check' });
        await route.continue();
      });
      await page.goto(`${base}/`);
      await waitFor(async () => between !== undefined, { what: 'the reconnection', timeoutMs: 10_000 });
      assert.ok(between);
      await rowOf(page, between.id).waitFor();
      const resumed = requests.filter((request) => request.url().endsWith('/watch'))[1];
      assert.ok(resumed);
      assert.equal((await resumed.allHeaders())['last-event-id'], lastId);
      await page.unroute('**/api/v1alpha1/watch*');

      // Set a token in Settings: the stream reconnects with it, and every call carries it.
      const token = 'tr_test_0123456789abcdef';
      await page.locator('#settings-button').click();
      await page.locator('#token').fill(token);
      const before = requests.length;
      await page.locator('#settings-form button[type="submit"]').click();
      await waitFor(async () => requests.slice(before).some((request) => request.url().endsWith('/watch')), {
        what: 'the stream reopened',
        timeoutMs: 5000,
      });
      assert.equal(await page.evaluate("localStorage.getItem('tracker.token')"), token);
      await page.locator('#status.live').waitFor();
      await page.goto(`${base}/#/services/between-streams`);
      await page.locator('#events-body .badge').first().waitFor();
      await page.reload();
      await page.locator('#events-body .badge').first().waitFor();
      await page.locator('#status.live').waitFor();
      // The force release too (from the service page's holder card).
      await page.locator('#holder button.danger').click();
      await page.locator('#force-reason').fill('token check');
      await page.locator('#force-confirm').click();
      await page.locator('#holder .free').waitFor();
      const afterToken = requests.slice(before);
      const kinds = new Set(afterToken.map((request) => new URL(request.url()).pathname.split('/')[3]));
      assert.deepEqual([...kinds].sort(), ['history', 'lock', 'queue', 'watch']);
      for (const request of afterToken) {
        assert.equal((await request.allHeaders()).authorization, `Bearer ${token}`, request.url());
      }
      // Before the token, none.
      for (const request of requests.slice(0, before)) {
        assert.equal((await request.allHeaders()).authorization, undefined, request.url());
      }
      assert.equal((await call(base, 'GET', `${API}/lock/${between.id}`)).status, 404, 'force-released');
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
    }
  });
});

/** The snapshot message of a fresh watch stream, as the server sent it. */
async function firstMessage(base: string): Promise<string> {
  const controller = new AbortController();
  try {
    const response = await fetch(`${base}${API}/watch`, {
      signal: AbortSignal.any([controller.signal, AbortSignal.timeout(10_000)]),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (let i = 0; i < 1000; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      // Messages before it (a retry: line) carry no data.
      const snapshot = text.split('\n\n').find((block) => /^event: snapshot$/m.test(block));
      if (snapshot && text.includes(`${snapshot}\n\n`)) return `${snapshot}\n\n`;
    }
    throw new Error(`no snapshot: ${text}`);
  } finally {
    controller.abort();
  }
}

describe('dashboard with authentication', () => {
  let server: ServerProcess;
  let browser: Browser;
  let base: string;
  let dir: { path: string; remove: () => void };
  let tokensFile: string;
  /** Tokens by scope; the writer's name, ci-deploy, is the owner of the locks it takes. */
  let reader: string;
  let writer: string;
  let admin: string;
  /** For the screenshots, where the owners show: one token per kind of client. */
  const tokens: Record<'viewer' | 'ci' | 'cron' | 'jobs' | 'oncall', string> = {
    viewer: '',
    ci: '',
    cron: '',
    jobs: '',
    oncall: '',
  };

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    dir = tempDir();
    tokensFile = join(dir.path, 'tokens.yaml');
    reader = addToken(tokensFile, { name: 'dashboard-viewer', scopes: ['lock:read'] });
    writer = addToken(tokensFile, { name: 'ci-deploy', scopes: ['lock:write'] });
    admin = addToken(tokensFile, { name: 'oncall-admin', scopes: ['lock:admin'] });
    tokens.viewer = addToken(tokensFile, { name: 'dashboard', scopes: ['lock:read'] });
    tokens.ci = addToken(tokensFile, { name: 'github-actions', scopes: ['lock:write'] });
    tokens.cron = addToken(tokensFile, { name: 'cron', scopes: ['lock:write'] });
    tokens.jobs = addToken(tokensFile, { name: 'k8s-jobs', scopes: ['lock:write'] });
    tokens.oncall = addToken(tokensFile, { name: 'on-call', scopes: ['lock:admin'] });
    [server, browser] = await Promise.all([
      startServerProcess({
        args: [...FREE_ARGS, ...['--auth-tokens-file', tokensFile]],
      }),
      chromium.get(),
    ]);
    base = server.baseUrl;
  });
  after(() => {
    // Stopped when the file ends: a queued request that fetch() aborted (the screenshots'
    // waiters) keeps its connection, and so holds up the server's stop, for about 4 s.
    atEnd.push(async () => {
      await server?.stop();
      dir?.remove();
    });
  });

  test('the page asks for a token first; a wrong one is refused in the dialog; a read token shows the locks live, with their owner', async (t) => {
    // The page itself is public; its data is not.
    const page0 = await fetch(`${base}/`);
    assert.equal(page0.status, 200);
    assert.equal((await fetch(`${base}/assets/${builtAssets(await page0.text()).script}`)).status, 200);
    const refused = await call(base, 'GET', `${API}/locks/list`);
    assert.equal(refused.status, 401);
    assert.equal(refused.json.code, 'UNAUTHENTICATED');

    const held = await acquire(base, { service: 'api-deployment', who: 'ci-pipeline-7' }, writer);
    const watched = await openPage(browser);
    const { page } = watched;
    const requests: Request[] = [];
    page.on('request', (request) => {
      if (request.url().includes(API)) requests.push(request);
    });
    try {
      await page.goto(`${base}/`);
      const dialog = page.locator('#signin-dialog');
      await dialog.waitFor();
      assert.match((await page.locator('#signin-reason').textContent()) ?? '', /requires an API token/);
      assert.match((await dialog.textContent()) ?? '', /stored in this browser only/);
      await page.locator('#status').filter({ hasText: 'Sign-in required' }).waitFor();
      assert.equal(await page.locator('#locks-body tr.row').count(), 0, 'no data without a token');
      assert.equal(
        await page.locator('#locks-body tr.empty').textContent(),
        'Sign in with an API token to see the locks.',
      );
      assert.equal(await page.locator('#count').textContent(), '');

      // A wrong token: refused in the dialog, which asks again; nothing is saved.
      await page.locator('#signin-token').fill('trk_not-a-real-token_0123456789');
      await page.locator('#signin-submit').click();
      await page
        .locator('#signin-error')
        .filter({ hasText: /not accepted/ })
        .waitFor();
      assert.equal(await dialog.isVisible(), true, 'still asking');
      assert.equal(await page.evaluate("localStorage.getItem('tracker.token')"), null);
      assert.equal(await page.locator('#locks-body tr.row').count(), 0);

      // The read token: the dialog closes, the stream connects with it and shows the lock.
      const before = requests.length;
      await page.locator('#signin-token').fill(reader);
      await page.locator('#signin-submit').click();
      await dialog.waitFor({ state: 'hidden' });
      await page.locator('#status.live').waitFor();
      assert.equal(await page.evaluate("localStorage.getItem('tracker.token')"), reader);
      const row = rowOf(page, held.id);
      await row.waitFor();
      assert.equal(await row.locator('td.owner').textContent(), 'ci-deploy');
      assert.equal(await row.locator('td.who').textContent(), 'ci-pipeline-7');

      // Live: a lock taken through REST with the write token appears, with its owner.
      const lock = await acquire(base, { service: 'api-staging-deployment', who: 'ci-pipeline-8' }, writer);
      const started = performance.now();
      await rowOf(page, lock.id).waitFor({ timeout: LIVE_MS });
      t.diagnostic(`lock visible ${Math.round(performance.now() - started)} ms after the REST call returned`);
      assert.equal(await rowOf(page, lock.id).locator('td.owner').textContent(), 'ci-deploy');
      // The filter finds locks by owner too.
      await page.locator('#filter').fill('ci-deploy');
      await page.locator('#count').filter({ hasText: '2 of 2 held locks' }).waitFor();
      await page.locator('#filter').fill('');

      // The service page shows the owner, and loads its history and queue with the token.
      await row.locator('td.service a').click();
      await page.locator('#holder .holder-owner').filter({ hasText: 'ci-deploy' }).waitFor();
      await page.locator('#events-body .badge.acquired').waitFor();
      await page.locator('#queue').filter({ hasText: 'Nobody is waiting.' }).waitFor();
      assert.equal(
        await page.locator('#events-body td.who').first().getAttribute('title'),
        'owner: ci-deploy',
      );

      // Every call since the sign-in carried the read token; none before it a valid one.
      const since = requests.slice(before);
      assert.ok(since.length >= 4, `calls since the sign-in: ${since.length}`);
      for (const request of since) {
        assert.equal((await request.allHeaders()).authorization, `Bearer ${reader}`, request.url());
      }
      for (const request of requests.slice(0, before)) {
        assert.notEqual((await request.allHeaders()).authorization, `Bearer ${reader}`, request.url());
      }
      assert.deepEqual(watched.dialogs, []);
      assert.deepEqual(unexpected(watched.errors), []);
      for (const id of [held.id, lock.id]) {
        assert.equal(
          (await call(base, 'DELETE', `${API}/lock/${id}`, undefined, bearer(writer))).status,
          200,
        );
      }
    } finally {
      await watched.close();
    }
  });

  test('a read-only token may not force-release: the page says it needs lock:admin and the lock stays; an admin token may', async () => {
    const lock = await acquire(base, { service: 'billing-db-migration', who: 'migrate-job-42' }, writer);
    const watched = await openPage(browser);
    const { page } = watched;
    const requests: Request[] = [];
    page.on('request', (request) => {
      if (request.url().includes(API)) requests.push(request);
    });
    try {
      await page.goto(`${base}/`);
      await signIn(page, reader);
      const row = rowOf(page, lock.id);
      await row.waitFor();

      const dialog = page.locator('#force-dialog');
      await row.getByRole('button', { name: 'Force release' }).click();
      assert.match((await page.locator('#force-details').textContent()) ?? '', /Ownerci-deploy/);
      await page.locator('#force-reason').fill('stuck runner');
      await page.locator('#force-confirm').click();
      await page
        .locator('#force-error')
        .filter({ hasText: 'This token may not force-release: it needs lock:admin.' })
        .waitFor();
      assert.equal(await dialog.isVisible(), true, 'the dialog stays open');
      assert.equal(await page.locator('#signin-dialog').isVisible(), false, 'no sign-in prompt for a 403');
      await page.locator('#force-cancel').click();
      await dialog.waitFor({ state: 'hidden' });
      assert.equal(
        (await call(base, 'GET', `${API}/lock/${lock.id}`, undefined, bearer(reader))).status,
        200,
      );
      // A lock taken after the refusal shows up: the page has seen everything the server
      // sent until then, and the refused lock is still among the rows.
      const later = await acquire(base, { service: 'after-the-refusal', who: 'ci-pipeline-9' }, writer);
      await rowOf(page, later.id).waitFor({ timeout: LIVE_MS });
      assert.equal(await row.isVisible(), true, 'the lock stays');
      assert.equal(
        (await call(base, 'DELETE', `${API}/lock/${later.id}`, undefined, bearer(writer))).status,
        200,
      );
      await rowOf(page, later.id).waitFor({ state: 'detached', timeout: LIVE_MS });
      assert.equal(await page.locator('#status').textContent(), 'Live', 'the page still works');

      // An admin token, set in Settings: the stream reconnects with it, and force release works.
      const before = requests.length;
      await page.locator('#settings-button').click();
      await page.locator('#token').fill(admin);
      await page.locator('#settings-form button[type="submit"]').click();
      await waitFor(
        async () => {
          for (const request of requests.slice(before)) {
            if (!request.url().endsWith('/watch')) continue;
            if ((await request.allHeaders()).authorization === `Bearer ${admin}`) return true;
          }
          return false;
        },
        { what: 'the stream reopened with the admin token', timeoutMs: 5000 },
      );
      await page.locator('#status.live').waitFor();
      await row.getByRole('button', { name: 'Force release' }).click();
      await page.locator('#force-reason').fill('runner died; approved by on-call');
      await page.locator('#force-confirm').click();
      await dialog.waitFor({ state: 'hidden' });
      await row.waitFor({ state: 'detached', timeout: LIVE_MS });
      assert.match(
        (await page.locator('#toast').textContent()) ?? '',
        /^Force-released billing-db-migration/,
      );
      assert.equal((await call(base, 'GET', `${API}/lock/${lock.id}`, undefined, bearer(admin))).status, 404);
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
    }
  });

  test('a saved token that is no longer accepted: one prompt for every call; dismissed, nothing retries until Sign in', async () => {
    const service = 'weekly-report';
    const lock = await acquire(base, { service, who: 'cron@report-01' }, writer);
    const revoked = addToken(tokensFile, { name: 'former-viewer', scopes: ['lock:read'] });
    await waitFor(
      async () => (await call(base, 'GET', `${API}/locks/list`, undefined, bearer(revoked))).status === 200,
      { what: 'the server to load the new token', timeoutMs: 5000 },
    );
    assert.equal(revokeToken(tokensFile, 'former-viewer'), true);
    await waitFor(
      async () => (await call(base, 'GET', `${API}/locks/list`, undefined, bearer(revoked))).status === 401,
      { what: 'the server to drop the revoked token', timeoutMs: 5000 },
    );
    const watched = await openPage(browser);
    const { page } = watched;
    const requests: Request[] = [];
    page.on('request', (request) => {
      if (request.url().includes(API)) requests.push(request);
    });
    try {
      // The page's timers run on Playwright's clock, moved on below instead of waited for.
      await page.clock.install();
      // A string: it runs in the page (the tests compile without the DOM types).
      await page.addInitScript(`localStorage.setItem('tracker.token', ${JSON.stringify(revoked)})`);
      await page.goto(`${base}/#/services/${service}`);
      const dialog = page.locator('#signin-dialog');
      await dialog.waitFor();
      assert.match(
        (await page.locator('#signin-reason').textContent()) ?? '',
        /saved token was not accepted/,
      );
      // The stream, the history and the queue each asked once, and now wait for the prompt
      // (a second call of any of them, before or after, fails the count below).
      await waitFor(() => requests.length >= 3, { what: 'the page to call the stream, history and queue' });
      const paths = requests.map((request) => new URL(request.url()).pathname.split('/')[3]).sort();
      assert.deepEqual(paths, ['history', 'queue', 'watch']);

      // Not now: the page says what is missing, and nothing is retried.
      await page.locator('#signin-cancel').click();
      await dialog.waitFor({ state: 'hidden' });
      await page.locator('#signin-button').waitFor();
      await page.locator('#status').filter({ hasText: 'Sign-in required' }).waitFor();
      await page
        .locator('#events-note')
        .filter({ hasText: /sign in/ })
        .waitFor();
      assert.match((await page.locator('#queue').textContent()) ?? '', /sign in/);
      // Half a minute passes for the page at once (its longest backoff is 15 s), every timer
      // due in it firing; then the page makes a call of its own. That call is the first
      // request since the three: nothing was retried while signed out.
      await page.clock.runFor(30_000);
      await page.evaluate("fetch('/api/v1alpha1/locks/list?after=30s').then(() => {}, () => {})");
      const { at } = await waitFor(
        () => {
          const index = requests.findIndex((request) => request.url().endsWith('?after=30s'));
          return index >= 0 && { at: index };
        },
        { what: 'the call made after the 30 s' },
      );
      assert.equal(at, 3, `no retries while signed out: ${requests.map((request) => request.url())}`);
      requests.splice(at, 1);

      // Sign in (the top bar's button): everything loads with the new token.
      await page.locator('#signin-button').click();
      await signIn(page, reader);
      await page.locator('#signin-button').waitFor({ state: 'hidden' });
      await page.locator('#status.live').waitFor();
      await page.locator('#holder .holder-owner').filter({ hasText: 'ci-deploy' }).waitFor();
      await page.locator('#events-body .badge.acquired').waitFor();
      await page.locator('#queue').filter({ hasText: 'Nobody is waiting.' }).waitFor();
      for (const request of requests.slice(3)) {
        assert.equal((await request.allHeaders()).authorization, `Bearer ${reader}`, request.url());
      }
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
      await call(base, 'DELETE', `${API}/lock/${lock.id}`, undefined, bearer(writer));
    }
  });

  test('screenshots: a few realistic locks, one with waiters', async (t) => {
    const { json: held } = await call(base, 'GET', `${API}/locks/list`, undefined, bearer(tokens.viewer));
    assert.equal(held.total, 0, 'the tests before left no lock behind (they would be in the pictures)');
    // Some history for the service page first.
    for (const who of ['ci-pipeline-4817', 'ci-pipeline-4819']) {
      const lock = await acquire(base, { service: 'production-deployment', who, ttlSeconds: 900 }, tokens.ci);
      await call(base, 'DELETE', `${API}/lock/${lock.id}`, undefined, bearer(tokens.ci));
    }
    const stuck = await acquire(
      base,
      { service: 'production-deployment', who: 'ci-pipeline-4820' },
      tokens.ci,
    );
    await call(
      base,
      'POST',
      `${API}/lock/${stuck.id}/force-release`,
      { reason: 'runner lost during deploy; approved by on-call' },
      bearer(tokens.oncall),
    );
    const take = (service: string, who: string, token: string, ttlSeconds?: number) =>
      acquire(base, { service, who, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) }, token);
    await take('production-deployment', 'ci-pipeline-4821', tokens.ci, 900);
    await take('orders-db-migration', 'migrate-job-42', tokens.jobs, 600);
    await take('nightly-report', 'cron@report-01', tokens.cron);
    await take('staging-deployment', 'gitlab-runner-17', tokens.ci, 1800);
    await take('search-reindex', 'reindex-worker-3', tokens.jobs, 20);
    await take('cache-warmup', 'k8s-cronjob-cache-warmup-28', tokens.cron, 300);
    const waiters = [waitInLine(base, 'orders-db-migration', 'migrate-job-43', tokens.jobs)];
    // In this order: the second joins the line after the first.
    await waitFor(
      async () =>
        (
          (await call(base, 'GET', `${API}/queue/orders-db-migration`, undefined, bearer(tokens.viewer))).json
            .waiters as unknown[]
        ).length === 1,
      { what: 'the first waiter', timeoutMs: 5000 },
    );
    waiters.push(waitInLine(base, 'orders-db-migration', 'migrate-job-44', tokens.jobs));
    const watched = await openPage(browser, { width: 1280, height: 560 });
    try {
      const { page } = watched;
      // The sign-in prompt, then the table.
      await page.goto(`${base}/`);
      await page.locator('#signin-dialog').waitFor();
      await page.locator('#signin-token').fill('trk_mistyped');
      await page.locator('#signin-submit').click();
      await page.locator('#signin-error').waitFor();
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-sign-in.png') });
      await page.locator('#signin-token').fill(tokens.viewer);
      await page.locator('#signin-submit').click();
      await page.locator('#signin-dialog').waitFor({ state: 'hidden' });
      await page.locator('#status.live').waitFor();
      await page.locator('#locks-body td.has-waiters').filter({ hasText: /^2$/ }).waitFor({ timeout: 5000 });
      assert.deepEqual([...new Set(await page.locator('#locks-body td.owner').allTextContents())].sort(), [
        'cron',
        'github-actions',
        'k8s-jobs',
      ]);
      // For the picture: every row's clock off zero, and no row still highlighted as new.
      // (Polled from here: waitForFunction's polling evaluates strings, which the page's CSP refuses.)
      await waitFor(
        () =>
          page.$$eval('#locks-body tr.row', (rows) =>
            rows.every((row) => !row.classList.contains('fresh') && row.children[3]?.textContent !== '0s'),
          ),
        {
          what: "every row's clock off zero and no row highlighted as new",
          timeoutMs: 10_000,
          intervalMs: 100,
        },
      );
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png') });
      if (!existsSync(DOCS_SCREENSHOT) || process.env.TRACKER_UPDATE_SCREENSHOTS === '1') {
        mkdirSync(join(ROOT, 'docs'), { recursive: true });
        await page.screenshot({ path: DOCS_SCREENSHOT });
        t.diagnostic(`wrote ${DOCS_SCREENSHOT}`);
      }
      await page.goto(`${base}/#/services/production-deployment`);
      await page.locator('#events-body .badge.force-released').waitFor();
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.screenshot({ path: join(ARTIFACTS, 'service.png'), fullPage: true });
      await page.goto(`${base}/#/services/orders-db-migration`);
      await page.locator('#queue tbody tr').nth(1).waitFor();
      assert.deepEqual(await page.locator('#queue td.who').allTextContents(), [
        'migrate-job-43',
        'migrate-job-44',
      ]);
      await page.screenshot({ path: join(ARTIFACTS, 'service-queue.png'), fullPage: true });
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      for (const waiter of waiters) await waiter.stop();
      await watched.close();
    }
  });
});

describe('dashboard: many holders, groups and resources', () => {
  let server: ServerProcess;
  let browser: Browser;
  let base: string;
  let dir: { path: string; remove: () => void };

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    dir = tempDir();
    const file = join(dir.path, 'resources.yaml');
    writeFileSync(
      file,
      [
        'resources:',
        '  - name: pixel-7',
        '    labels: [android-phone]',
        '    properties: {serial: "<b>PX7</b>", adb: "10.0.0.7:5555"}',
        '    description: "<img src=z onerror=alert(5)> bench phone"',
        '  - name: galaxy-s23',
        '    labels: [android-phone]',
        '    properties: {serial: "S23"}',
        '  - name: build-farm',
        '    labels: [builders]',
        '    capacity: 3',
        '',
      ].join('\n'),
    );
    [server, browser] = await Promise.all([
      startServerProcess({
        args: [...FREE_ARGS, '--resources-file', file],
      }),
      chromium.get(),
    ]);
    base = server.baseUrl;
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  /** A full-page picture in test-artifacts/, to look at. */
  const screenshot = (page: Page, name: string) =>
    page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  /** One of a label card's figures (capacity, holders, waiters, free), once it reads `value`. */
  const stat = (page: Page, label: string, name: string, value: number) =>
    page
      .locator(`section.label-card[data-label="${label}"] .stat-${name} .stat-value`)
      .filter({ hasText: new RegExp(`^${value}$`) });

  test("the Resources view shows each label's pool (capacity, holders, waiters, free), live", async () => {
    const watched = await openDashboard(browser, base, '#/resources');
    const { page } = watched;
    const waiter = new AbortController();
    const taken: string[] = [];
    try {
      await page.locator('section.label-card[data-label="android-phone"]').waitFor();
      assert.equal(await page.locator('#nav-resources').getAttribute('aria-current'), 'page');
      assert.equal(await page.locator('#resources-count').textContent(), '3 resources');
      assert.deepEqual(await page.locator('section.label-card h2').allTextContents(), [
        'android-phone',
        'builders',
      ]);
      for (const [name, value] of [
        ['capacity', 2],
        ['holders', 0],
        ['waiters', 0],
        ['free', 2],
      ] as const) {
        await stat(page, 'android-phone', name, value).waitFor();
      }
      await stat(page, 'builders', 'capacity', 3).waitFor();

      // Two phones taken by label: the pool is exhausted; a third request waits.
      for (const who of ['ui-tests-1', 'ui-tests-2']) {
        const lock = await acquire(base, { label: 'android-phone', who, ttlSeconds: 600 });
        taken.push(lock.id);
      }
      await stat(page, 'android-phone', 'holders', 2).waitFor({ timeout: LIVE_MS * 3 });
      await stat(page, 'android-phone', 'free', 0).waitFor();
      const waiting = call(
        base,
        'POST',
        `${API}/lock`,
        { label: 'android-phone', who: 'ui-tests-3', waitSeconds: 60 },
        { signal: waiter.signal },
      ).catch(() => undefined);
      await stat(page, 'android-phone', 'waiters', 1).waitFor({ timeout: LIVE_MS * 3 });
      await page.locator('section.label-card.exhausted[data-label="android-phone"]').waitFor();
      const pixel = page.locator('tr[data-resource="pixel-7"]');
      assert.match((await pixel.locator('td.holders').textContent()) ?? '', /^ui-tests-[12]$/);
      // Properties and the description are text, whatever they look like.
      assert.deepEqual(await pixel.locator('.property').allTextContents(), [
        'serial=<b>PX7</b>',
        'adb=10.0.0.7:5555',
      ]);
      assert.equal(
        await pixel.locator('td.description').textContent(),
        '<img src=z onerror=alert(5)> bench phone',
      );
      assert.deepEqual(
        await page.evaluate(
          `({ b: document.querySelectorAll('#resources b').length, img: document.querySelectorAll('#resources img').length })`,
        ),
        { b: 0, img: 0 },
      );

      waiter.abort();
      await waiting;
      await stat(page, 'android-phone', 'waiters', 0).waitFor({ timeout: LIVE_MS * 3 });
      for (const id of taken.splice(0)) await call(base, 'DELETE', `${API}/lock/${id}`);
      await stat(page, 'android-phone', 'free', 2).waitFor({ timeout: LIVE_MS * 3 });

      // A resource's name leads to its service page.
      await pixel.locator('td.name a').click();
      await page.locator('#service-view').waitFor();
      assert.equal(await page.locator('#service-title').textContent(), 'pixel-7');
      await screenshot(page, 'dashboard-resources-service');
      await page.goto(`${base}/#/resources`);
      await stat(page, 'android-phone', 'free', 2).waitFor();
      await screenshot(page, 'dashboard-resources');
      assert.deepEqual(watched.dialogs, []);
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      waiter.abort();
      for (const id of taken) await call(base, 'DELETE', `${API}/lock/${id}`);
      await watched.close();
    }
  });

  test('semaphore and shared holders are each listed on the service page; the queue shows mode and priority', async () => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    const ids: string[] = [];
    const waiter = new AbortController();
    try {
      for (const who of ['runner-a', 'runner-b', 'runner-c']) {
        ids.push((await acquire(base, { service: 'integration-env', who, limit: 3, ttlSeconds: 600 })).id);
      }
      for (const who of ['reader-1', 'reader-2']) {
        ids.push((await acquire(base, { service: 'config-repo', who, mode: 'shared' })).id);
      }
      // Every holder is a row of the table, tagged with how it holds its service.
      for (const id of ids) await rowOf(page, id).waitFor({ timeout: LIVE_MS });
      assert.equal(
        await rowOf(page, ids[0] as string)
          .locator('td.service .tag')
          .textContent(),
        'limit 3',
      );
      assert.equal(
        await rowOf(page, ids[3] as string)
          .locator('td.service .tag')
          .textContent(),
        'shared',
      );
      assert.match((await page.locator('#count').textContent()) ?? '', /^5 held locks$/);

      await page.goto(`${base}/#/services/integration-env`);
      await page.locator('#holder .holder').nth(2).waitFor();
      assert.deepEqual(await page.locator('#holder .holder-who').allTextContents(), [
        'runner-a',
        'runner-b',
        'runner-c',
      ]);
      assert.equal(await page.locator('#holder .holders-summary').textContent(), '3 of 3 held (limit 3).');
      assert.equal(await page.locator('#holder button', { hasText: 'Force release' }).count(), 3);

      // A writer waits behind the shared readers, with a priority.
      const waiting = call(
        base,
        'POST',
        `${API}/lock`,
        { service: 'config-repo', who: 'writer-9', waitSeconds: 60, priority: 5 },
        { signal: waiter.signal },
      ).catch(() => undefined);
      await page.goto(`${base}/#/services/config-repo`);
      await page.locator('#holder .holder').nth(1).waitFor();
      assert.equal(
        await page.locator('#holder .holders-summary').textContent(),
        '2 shared holders: more shared holders may join, no exclusive one.',
      );
      assert.deepEqual(await page.locator('#holder .holder-mode').allTextContents(), ['shared', 'shared']);
      await page.locator('#queue td.who', { hasText: 'writer-9' }).waitFor({ timeout: LIVE_MS * 3 });
      const cells = await page.locator('#queue tbody tr').first().locator('td').allTextContents();
      assert.deepEqual(cells.slice(0, 5), ['1', 'writer-9', 'exclusive', '5', 'this service']);
      await screenshot(page, 'dashboard-shared-holders');
      waiter.abort();
      await waiting;
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      waiter.abort();
      for (const id of ids) await call(base, 'DELETE', `${API}/lock/${id}`);
      await watched.close();
    }
  });

  test('a group is shown as one unit, and released with one button after a confirmation', async () => {
    const watched = await openDashboard(browser, base);
    const { page } = watched;
    const created = await call(base, 'POST', `${API}/locks`, {
      who: 'deploy-2291',
      ttlSeconds: 900,
      locks: [{ service: 'db-staging' }, { service: 'cache', mode: 'shared' }, { label: 'builders' }],
    });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    const groupId = String(created.json.id);
    const members = created.json.locks as LockJson[];
    try {
      const group = page.locator(`#groups li.group[data-group-id="${groupId}"]`);
      await group.waitFor({ timeout: LIVE_MS });
      assert.equal(await group.locator('.group-who').textContent(), 'deploy-2291');
      assert.equal(await group.locator('.group-count').textContent(), '3 locks');
      assert.deepEqual((await group.locator('.group-services a').allTextContents()).sort(), [
        'build-farm',
        'cache',
        'db-staging',
      ]);
      for (const lock of members) {
        await rowOf(page, lock.id).waitFor();
        assert.match((await rowOf(page, lock.id).locator('td.service .tag').textContent()) ?? '', /group$/);
      }

      // Cancel releases nothing.
      await group.getByRole('button', { name: `Release group ${groupId}` }).click();
      const dialog = page.locator('#group-dialog');
      await dialog.waitFor();
      assert.equal(await page.locator('#group-members li').count(), 3);
      assert.ok(((await page.locator('#group-details').textContent()) ?? '').includes(groupId));
      await page.locator('#group-cancel').click();
      await dialog.waitFor({ state: 'hidden' });
      assert.equal((await call(base, 'GET', `${API}/locks/${groupId}`)).status, 200, 'still held');

      // The service page offers the same button beside each member.
      await page.goto(`${base}/#/services/db-staging`);
      await page.locator('#holder .holder-group').waitFor();
      assert.match((await page.locator('#holder .holder-group').textContent()) ?? '', /^3 locks: /);
      await screenshot(page, 'dashboard-group-member');
      await page.locator('#holder button.release-group').click();
      await dialog.waitFor();
      await page.locator('#group-confirm').click();
      await dialog.waitFor({ state: 'hidden' });
      await page.locator('#holder .free').waitFor({ timeout: LIVE_MS });
      assert.equal(await page.locator('#toast').textContent(), 'Released the group: 3 locks.');
      assert.equal((await call(base, 'GET', `${API}/locks/${groupId}`)).status, 404, 'released, all of it');
      await page.goto(`${base}/#/`);
      await page.locator('#locks-body tr.empty').waitFor();
      assert.equal(await page.locator('#groups').isHidden(), true, 'no group is held');
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await call(base, 'DELETE', `${API}/locks/${groupId}`);
      await watched.close();
    }
  });
});

describe('dashboard with 5,000 held locks', () => {
  const COUNT = 5000;
  const CONCURRENCY = 32;
  let server: ServerProcess;
  let browser: Browser;
  let base: string;
  let dir: { path: string; remove: () => void };
  const ids: string[] = [];
  let seededMs = 0;

  before(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    dir = tempDir();
    const database = join(dir.path, 'tracker.db');
    const seeding = (async () => {
      // The locks are written straight into the server's SQLite file, through the lock
      // service and store the server runs: 5,000 REST calls would cost several CPU-seconds
      // and prove nothing about the dashboard (the REST API is tested elsewhere).
      const started = performance.now();
      const store = openSqliteLockStore({ path: database, clock: systemClock });
      const { service, close } = createTestService(store);
      try {
        for (let i = 0; i < COUNT; i++) {
          const { lock } = await service.acquire({
            caller: AUTHENTICATION_OFF,
            service: `svc-${String(i).padStart(4, '0')}`,
            who: `runner-${i % 97}`,
            ...(i % 3 === 0 ? {} : { ttlSeconds: 3600 }),
          });
          ids[i] = lock.id;
        }
      } finally {
        close();
        await store.close();
      }
      seededMs = performance.now() - started;
    })();
    [, browser] = await Promise.all([seeding, chromium.get()]);
    server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${database}`],
    });
    base = server.baseUrl;
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  test('the server starts with the 5,000 locks its database holds', async (t) => {
    t.diagnostic(`wrote ${COUNT} locks into the database in ${Math.round(seededMs)} ms`);
    const { json } = await call(base, 'GET', `${API}/locks/list?per_page=1`);
    assert.equal(json.total, COUNT);
  });

  test('renders, filters and scrolls 5,000 locks quickly, and still updates live', async (t) => {
    const watched = await openPage(browser);
    const { page } = watched;
    try {
      const started = performance.now();
      await page.goto(`${base}/`);
      await page
        .locator('#count')
        .filter({ hasText: `${COUNT} held locks` })
        .waitFor({ timeout: 10_000 });
      await rowOf(page, ids[0] ?? '').waitFor({ timeout: 10_000 });
      const rendered = performance.now() - started;
      t.diagnostic(`first render of ${COUNT} locks (navigation to first row): ${Math.round(rendered)} ms`);
      assert.ok(rendered < 10_000, 'visible within 10 s');
      const rows = await page.locator('#locks-body tr.row').count();
      t.diagnostic(`table rows in the DOM: ${rows}`);
      assert.ok(rows > 10 && rows < 200, `windowed: ${rows} rows in the DOM`);

      // Filter, measured in the page from the input event to the frame after the render.
      // Strings, not functions: they run in the page (the tests compile without the DOM types).
      const filterTo = (query: string) =>
        page.evaluate(`(async () => {
          const input = document.getElementById('filter');
          const begun = performance.now();
          input.value = ${JSON.stringify(query)};
          input.dispatchEvent(new Event('input'));
          await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
          return {
            ms: performance.now() - begun,
            count: document.getElementById('count').textContent,
            rows: document.querySelectorAll('#locks-body tr.row').length,
          };
        })()`) as Promise<{ ms: number; count: string; rows: number }>;
      const one = await filterTo('svc-4321');
      t.diagnostic(`filter to 1 of ${COUNT}: ${one.ms.toFixed(1)} ms`);
      assert.equal(one.count, `1 of ${COUNT} held locks`);
      assert.equal(one.rows, 1);
      const many = await filterTo('runner-1');
      t.diagnostic(`filter to ${many.count}: ${many.ms.toFixed(1)} ms`);
      assert.match(many.count, /^\d+ of 5000 held locks$/);
      const all = await filterTo('');
      t.diagnostic(`clear the filter: ${all.ms.toFixed(1)} ms`);
      assert.equal(all.count, `${COUNT} held locks`);
      for (const result of [one, many, all]) assert.ok(result.ms < 2000, 'sanity bound');

      // Scroll to the end: the last lock is there.
      const scrolled = (await page.evaluate(`(async () => {
        const viewport = document.getElementById('viewport');
        const begun = performance.now();
        viewport.scrollTop = viewport.scrollHeight;
        await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
        return performance.now() - begun;
      })()`)) as number;
      t.diagnostic(`scroll to the end: ${scrolled.toFixed(1)} ms`);
      await rowOf(page, ids[COUNT - 1] ?? '').waitFor();

      // Sort by fencing token, descending.
      const sortStarted = performance.now();
      await page.locator('th[data-sort="token"] button').click();
      await page.locator('th[data-sort="token"] button').click();
      await page.locator('th[data-sort="token"][aria-sort="descending"]').waitFor();
      t.diagnostic(`two sorts by fencing token: ${Math.round(performance.now() - sortStarted)} ms`);

      // Live updates at this size.
      await page.locator('#filter').fill('');
      await page.evaluate("document.getElementById('viewport').scrollTop = 0");
      const lock = await curlLock(base, { service: 'aaa-live-check', who: 'curl' });
      const liveStarted = performance.now();
      await page.locator('th[data-sort="service"] button').click();
      await rowOf(page, lock.id).waitFor({ timeout: LIVE_MS * 2 });
      t.diagnostic(
        `a new lock among ${COUNT} visible after ${Math.round(performance.now() - liveStarted)} ms`,
      );

      // A burst: 500 releases at once render as they come, and the count follows.
      const burstStarted = performance.now();
      let next = 0;
      const release = async () => {
        for (let i = next++; i < 500; i = next++) await call(base, 'DELETE', `${API}/lock/${ids[i]}`);
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, release));
      const sent = performance.now() - burstStarted;
      await page
        .locator('#count')
        .filter({ hasText: `${COUNT + 1 - 500} held locks` })
        .waitFor({ timeout: 10_000 });
      t.diagnostic(
        `500 releases: sent in ${Math.round(sent)} ms, table caught up ${Math.round(performance.now() - burstStarted - sent)} ms later`,
      );
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-5000.png') });
      assert.deepEqual(unexpected(watched.errors), []);
    } finally {
      await watched.close();
    }
  });
});
