import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { createGate } from '../src/auth/gate.js';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import type { LockStore } from '../src/core/lock-store.js';
import { createWatcherRegistry, DEFAULT_WATCH_LIMITS } from '../src/core/watchers.js';
import { buildHttpApp } from '../src/http/app.js';
import { createHostCheck } from '../src/http/request-guard.js';
import { createMetrics } from '../src/metrics.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService } from './support/lock-service.js';
import { ManualClock } from './support/manual-clock.js';
import { API, call } from './support/rest.js';
import { tempDir } from './support/server-process.js';

/**
 * A POST without a body says it is no HTML form (request-guard.ts): curl -X POST -H 'X-Tracker: 1'.
 */
const BODYLESS = { headers: { 'x-tracker': '1' } };

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Running {
  base: string;
  clock: ManualClock;
  store: LockStore;
  app: FastifyInstance;
  path: string;
  close: () => Promise<void>;
}

/** The REST app on a real socket, over a real SQLite file, with a clock the test moves. */
async function startApp(
  options: { busyTimeoutMs?: number; defaultTtlSeconds?: number; maxTtlSeconds?: number } = {},
): Promise<Running> {
  const dir = tempDir();
  const path = join(dir.path, 'tracker.db');
  const clock = new ManualClock(Date.parse('2024-01-15T10:00:00.250Z'));
  const store = openSqliteLockStore({ path, clock, busyTimeoutMs: options.busyTimeoutMs });
  const watchers = createWatcherRegistry(DEFAULT_WATCH_LIMITS);
  const metrics = createMetrics({
    stats: () => store.stats(),
    resources: () => store.listResources(),
    watchers,
  });
  const { service, feed } = createTestService(metrics.instrument(store), {
    clock,
    owner: 'http-test',
    defaultTtlSeconds: options.defaultTtlSeconds ?? null,
    maxTtlSeconds: options.maxTtlSeconds ?? null,
    onEvent: (event) => metrics.observe(event),
  });
  const app = buildHttpApp({
    service,
    watchers,
    gate: createGate({ authentication: AUTHENTICATION_OFF, limiter: null }),
    hosts: createHostCheck({ listenHost: '127.0.0.1', allowedHosts: [], machineHostname: 'http-test' }),
    metrics,
    ready: () => store.ping(),
    logger: pino({ level: 'silent' }),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address && typeof address === 'object');
  return {
    base: `http://127.0.0.1:${address.port}`,
    clock,
    store,
    app,
    path,
    close: async () => {
      await app.close();
      feed.close();
      await store.close().catch(() => {});
      dir.remove();
    },
  };
}

describe('REST API', () => {
  let run: Running;
  const post = (body: unknown, headers?: Record<string, string>) =>
    call(run.base, 'POST', `${API}/lock`, body, { headers });

  before(async () => {
    run = await startApp();
  });
  after(async () => {
    await run.close();
  });

  describe('POST /lock', () => {
    test('201 with the lock: UUID id, whole-second UTC createdAt', async () => {
      const { status, json } = await post({ service: 'production-deployment', who: 'ci-pipeline-123' });
      assert.equal(status, 201);
      assert.deepEqual(Object.keys(json).sort(), [
        'createdAt',
        'expiresAt',
        'fencingToken',
        'groupId',
        'id',
        'limit',
        'link',
        'mode',
        'note',
        'owner',
        'resource',
        'service',
        'ttlSeconds',
        'waiters',
        'who',
      ]);
      assert.equal(json.owner, null, 'no owner without authentication');
      assert.deepEqual([json.limit, json.mode, json.groupId, json.resource], [1, 'exclusive', null, null]);
      assert.equal(json.ttlSeconds, null, 'no TTL unless asked for: the guide behaviour');
      assert.equal(json.expiresAt, null);
      assert.equal(json.fencingToken, 1);
      assert.match(String(json.id), UUID);
      assert.equal(json.service, 'production-deployment');
      assert.equal(json.who, 'ci-pipeline-123');
      assert.equal(json.createdAt, '2024-01-15T10:00:00Z');
      assert.match(String(json.createdAt), TIMESTAMP);
    });

    test('409 LOCK_HELD with existingLock and no top-level id', async () => {
      const first = await post({ service: 'held-service', who: 'first' });
      const { status, json } = await post({ service: 'held-service', who: 'second' });
      assert.equal(status, 409);
      assert.equal('id' in json, false, 'no top-level id, so jq -r .id prints null');
      assert.deepEqual(json, {
        error: 'lock already exists',
        code: 'LOCK_HELD',
        existingLock: first.json,
        holders: [first.json],
      });
    });

    const invalid: Array<[string, unknown, string, RegExp]> = [
      ['missing service', { who: 'w' }, 'service', /service is required/],
      ['missing who', { service: 's' }, 'who', /who is required/],
      ['empty service', { service: '', who: 'w' }, 'service', /service must be a non-empty string/],
      ['blank who', { service: 's', who: '   ' }, 'who', /who must be a non-empty string/],
      ['numeric service', { service: 42, who: 'w' }, 'service', /service must be a string/],
      ['null who', { service: 's', who: null }, 'who', /who must be a string/],
      ['object service', { service: { a: 1 }, who: 'w' }, 'service', /service must be a string/],
      ['service too long', { service: 'x'.repeat(257), who: 'w' }, 'service', /at most 256 characters/],
      ['who too long', { service: 's', who: '界'.repeat(257) }, 'who', /at most 256 characters/],
      ['control character', { service: 'a\u0007b', who: 'w' }, 'service', /control characters/],
      ['newline in who', { service: 's', who: 'w\nx' }, 'who', /control characters/],
      ['DEL character', { service: 's\u007f', who: 'w' }, 'service', /control characters/],
      ['C1 control (CSI)', { service: 's\u009b31m', who: 'w' }, 'service', /control characters/],
      ['C1 next line in who', { service: 's', who: 'w\u0085x' }, 'who', /control characters/],
      ['right-to-left override', { service: 'deploy\u202eyalp', who: 'w' }, 'service', /bidirectional/],
      ['left-to-right isolate', { service: 's', who: '\u2066w\u2069' }, 'who', /bidirectional/],
      ['right-to-left mark', { service: 'a\u200fb', who: 'w' }, 'service', /invisible/],
      ['Arabic letter mark', { service: 'a\u061cb', who: 'w' }, 'service', /invisible/],
      ['zero-width space', { service: 'prod\u200bdeploy', who: 'w' }, 'service', /invisible/],
      ['zero-width joiner', { service: 's', who: 'a\u200db' }, 'who', /invisible/],
      ['word joiner', { service: 'a\u2060b', who: 'w' }, 'service', /invisible/],
      ['byte order mark', { service: 'a\ufeffb', who: 'w' }, 'service', /invisible/],
      ['soft hyphen', { service: 'de\u00adploy', who: 'w' }, 'service', /invisible/],
      ['line separator', { service: 'a\u2028b', who: 'w' }, 'service', /invisible/],
      ['unknown field', { service: 's', who: 'w', ttl: 5 }, 'ttl', /unknown field: ttl/],
      ['ttlSeconds zero', { service: 's', who: 'w', ttlSeconds: 0 }, 'ttlSeconds', /from 1 to 31536000/],
      ['ttlSeconds negative', { service: 's', who: 'w', ttlSeconds: -5 }, 'ttlSeconds', /from 1 to 31536000/],
      [
        'ttlSeconds over a year',
        { service: 's', who: 'w', ttlSeconds: 31_536_001 },
        'ttlSeconds',
        /from 1 to 31536000/,
      ],
      [
        'ttlSeconds fractional',
        { service: 's', who: 'w', ttlSeconds: 1.5 },
        'ttlSeconds',
        /must be an integer/,
      ],
      [
        'ttlSeconds a string',
        { service: 's', who: 'w', ttlSeconds: '30' },
        'ttlSeconds',
        /must be an integer/,
      ],
      ['array body', [], 'body', /must be a JSON object/],
      ['string body', '"text"', 'body', /must be a JSON object/],
    ];
    for (const [name, body, field, message] of invalid) {
      test(`400 naming the field: ${name}`, async () => {
        const { status, json } = await post(body);
        assert.equal(status, 400);
        assert.equal(json.code, 'INVALID_ARGUMENT');
        assert.equal(json.field, field);
        assert.match(String(json.error), message);
      });
    }

    test('256 characters (code points, not UTF-16 units) are accepted', async () => {
      const { status, json } = await post({ service: '🚀'.repeat(256), who: 'w'.repeat(256) });
      assert.equal(status, 201);
      assert.equal(json.service, '🚀'.repeat(256));
    });

    test('a name is kept in Unicode NFC: café composed and decomposed are one lock, found either way', async () => {
      const composed = 'caf\u00e9-deploy';
      const decomposed = 'cafe\u0301-deploy';
      assert.notEqual(composed, decomposed);
      const first = await post({ service: decomposed, who: 'j\u00f6rg' });
      assert.equal(first.status, 201);
      assert.equal(first.json.service, composed, 'kept in NFC');
      assert.equal(first.json.who, 'j\u00f6rg');
      const second = await post({ service: composed, who: 'jo\u0308rg' });
      assert.equal(second.status, 409, 'the same service');
      assert.equal((second.json.existingLock as { id: string }).id, first.json.id);
      for (const [query, field] of [
        [`service=${encodeURIComponent(decomposed)}`, 'service'],
        [`service=${encodeURIComponent(composed)}`, 'service'],
        [`who=${encodeURIComponent('jo\u0308rg')}`, 'who'],
      ] as const) {
        const listed = await call(run.base, 'GET', `${API}/locks/list?${query}`);
        assert.equal(listed.json.total, 1, `list by ${field}: ${query}`);
        const history = await call(run.base, 'GET', `${API}/history?${query}`);
        assert.equal(history.status, 200);
        assert.ok(
          (history.json.events as Array<{ lock: { id: string } }>).some(
            (event) => event.lock.id === first.json.id,
          ),
          `history by ${field}: ${query}`,
        );
      }
      const queue = await call(run.base, 'GET', `${API}/queue/${encodeURIComponent(decomposed)}`);
      assert.equal(queue.json.service, composed);
      assert.equal((queue.json.holder as { id: string }).id, first.json.id);
      await call(run.base, 'DELETE', `${API}/lock/${first.json.id}`);
    });

    test('malformed JSON is a 400', async () => {
      const { status, json } = await post('{"service": "a",');
      assert.equal(status, 400);
      assert.deepEqual(json, { error: 'request body is not valid JSON', code: 'INVALID_ARGUMENT' });
    });

    test('an empty JSON body is a 400, not a 500', async () => {
      const { status, json } = await post('');
      assert.equal(status, 400);
      assert.equal(json.code, 'INVALID_ARGUMENT');
    });

    test('prototype poisoning is refused', async () => {
      const { status } = await post('{"service":"p","who":"w","__proto__":{"admin":true}}');
      assert.equal(status, 400);
    });

    test('a content type other than JSON is a 415', async () => {
      const { status, json } = await post('service=a&who=b', {
        'content-type': 'application/x-www-form-urlencoded',
      });
      assert.equal(status, 415);
      assert.equal(json.code, 'UNSUPPORTED_MEDIA_TYPE');
      const text = await post('{"service":"a","who":"b"}', { 'content-type': 'text/plain' });
      assert.equal(text.status, 415);
    });

    test('JSON with a charset parameter is accepted', async () => {
      const { status } = await post(JSON.stringify({ service: 'charset', who: 'w' }), {
        'content-type': 'application/json; charset=utf-8',
      });
      assert.equal(status, 201);
    });

    test('a body over 64 KiB is a 413', async () => {
      const { status, json } = await post(JSON.stringify({ service: 'big', who: 'x'.repeat(70_000) }));
      assert.equal(status, 413);
      assert.equal(json.code, 'PAYLOAD_TOO_LARGE');
    });

    test('rejected requests write nothing', async () => {
      const before = await call(run.base, 'GET', `${API}/locks/list?service=never-written`);
      await post({ service: 'never-written', who: 'w', extra: true });
      await post({ service: 'never-written', who: 'w\u0000' });
      await post({ service: 'never-written', who: 'x'.repeat(70_000) });
      const afterwards = await call(run.base, 'GET', `${API}/locks/list?service=never-written`);
      assert.equal(before.json.total, 0);
      assert.equal(afterwards.json.total, 0);
    });
  });

  describe('leases, renewal and fencing', () => {
    test('a TTL gives the lock ttlSeconds and expiresAt; after it the lock is gone everywhere', async () => {
      const { status, json } = await post({ service: 'leased', who: 'crashing-job', ttlSeconds: 90 });
      assert.equal(status, 201);
      assert.equal(json.ttlSeconds, 90);
      assert.equal(Date.parse(String(json.expiresAt)) - Date.parse(String(json.createdAt)), 90_000);
      assert.match(String(json.expiresAt), TIMESTAMP);
      const listed = await call(run.base, 'GET', `${API}/locks/list?service=leased`);
      assert.deepEqual(listed.json.locks, [json]);
      run.clock.advance(89_000);
      assert.equal((await post({ service: 'leased', who: 'too-early' })).status, 409);
      run.clock.advance(1_000);
      assert.equal((await call(run.base, 'GET', `${API}/lock/${json.id}`)).status, 404);
      assert.equal((await call(run.base, 'GET', `${API}/locks/list?service=leased`)).json.total, 0);
      const next = await post({ service: 'leased', who: 'next-job' });
      assert.equal(next.status, 201);
      assert.ok(Number(next.json.fencingToken) > Number(json.fencingToken));
      assert.equal(
        (await call(run.base, 'GET', `${API}/unlock/${json.id}`)).status,
        404,
        'the expired lock cannot release the new one',
      );
      assert.equal((await call(run.base, 'GET', `${API}/lock/${next.json.id}`)).status, 200);
    });

    test('POST /lock/{id}/renew extends the lease with its own TTL or a new one', async () => {
      const { json } = await post({ service: 'renewable', who: 'long-job', ttlSeconds: 60 });
      run.clock.advance(50_000);
      const renewed = await call(run.base, 'POST', `${API}/lock/${json.id}/renew`, undefined, BODYLESS);
      assert.equal(renewed.status, 200);
      assert.equal(renewed.json.ttlSeconds, 60);
      assert.equal(Date.parse(String(renewed.json.expiresAt)), Date.parse(String(json.expiresAt)) + 50_000);
      assert.equal(renewed.json.fencingToken, json.fencingToken);
      const longer = await call(run.base, 'POST', `${API}/lock/${json.id}/renew`, { ttlSeconds: 3600 });
      assert.equal(longer.status, 200);
      assert.equal(longer.json.ttlSeconds, 3600);
      const empty = await call(run.base, 'POST', `${API}/lock/${json.id}/renew`, '', {
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(empty.status, 200);
      assert.equal(empty.json.ttlSeconds, 3600);
      assert.deepEqual((await call(run.base, 'GET', `${API}/lock/${json.id}`)).json, empty.json);
    });

    test('renewing a lock that expired, was released or never existed is 404 LOCK_NOT_HELD', async () => {
      const NOT_HELD = { error: 'lock not held', code: 'LOCK_NOT_HELD' };
      const { json } = await post({ service: 'lapsed', who: 'paused-holder', ttlSeconds: 5 });
      run.clock.advance(6_000);
      const taken = await post({ service: 'lapsed', who: 'new-holder', ttlSeconds: 60 });
      assert.equal(taken.status, 201);
      const late = await call(run.base, 'POST', `${API}/lock/${json.id}/renew`, undefined, BODYLESS);
      assert.equal(late.status, 404);
      assert.deepEqual(late.json, NOT_HELD);
      assert.deepEqual((await call(run.base, 'GET', `${API}/lock/${taken.json.id}`)).json, taken.json);
      await call(run.base, 'DELETE', `${API}/lock/${taken.json.id}`);
      for (const id of [taken.json.id, randomUUID(), 'nope']) {
        const renewed = await call(run.base, 'POST', `${API}/lock/${id}/renew`, undefined, BODYLESS);
        assert.deepEqual(renewed.json, NOT_HELD);
      }
    });

    test('renew refuses bad input with 400 naming the field', async () => {
      const { json } = await post({ service: 'renew-input', who: 'w', ttlSeconds: 60 });
      const cases: Array<[unknown, string]> = [
        [{ ttlSeconds: 0 }, 'ttlSeconds'],
        [{ ttlSeconds: 'long' }, 'ttlSeconds'],
        [{ ttl: 5 }, 'ttl'],
      ];
      for (const [body, field] of cases) {
        const reply = await call(run.base, 'POST', `${API}/lock/${json.id}/renew`, body);
        assert.equal(reply.status, 400, JSON.stringify(body));
        assert.equal(reply.json.field, field);
      }
    });

    test('fencing tokens strictly increase per service across releases and expiries', async () => {
      const tokens: number[] = [];
      for (let i = 0; i < 4; i++) {
        const { json } = await post({ service: 'fenced', who: `holder-${i}`, ttlSeconds: 10 });
        tokens.push(Number(json.fencingToken));
        if (i % 2) run.clock.advance(10_000);
        else await call(run.base, 'DELETE', `${API}/lock/${json.id}`);
      }
      assert.deepEqual(
        tokens,
        [...tokens].sort((a, b) => a - b),
      );
      assert.equal(new Set(tokens).size, 4);
    });
  });

  describe('GET /lock/{id}', () => {
    test('200 with the lock', async () => {
      const created = await post({ service: 'get-me', who: 'w' });
      const { status, json } = await call(run.base, 'GET', `${API}/lock/${created.json.id}`);
      assert.equal(status, 200);
      assert.deepEqual(json, created.json);
    });

    test('an upper-case id finds the same lock', async () => {
      const created = await post({ service: 'get-me-upper', who: 'w' });
      const { status, json } = await call(
        run.base,
        'GET',
        `${API}/lock/${String(created.json.id).toUpperCase()}`,
      );
      assert.equal(status, 200);
      assert.equal(json.id, created.json.id);
    });

    for (const id of [
      randomUUID(),
      'not-a-uuid',
      '507f1f77bcf86cd799439011',
      '%2e%2e',
      "'; DROP TABLE locks; --",
    ]) {
      test(`404 LOCK_NOT_FOUND for ${id}`, async () => {
        const { status, json } = await call(run.base, 'GET', `${API}/lock/${encodeURIComponent(id)}`);
        assert.equal(status, 404);
        assert.deepEqual(json, { error: 'lock not found', code: 'LOCK_NOT_FOUND' });
      });
    }
  });

  describe('release', () => {
    const routes: Array<[string, (id: string) => string]> = [
      ['GET', (id) => `${API}/unlock/${id}`],
      ['POST', (id) => `${API}/unlock/${id}`],
      ['DELETE', (id) => `${API}/lock/${id}`],
    ];
    for (const [method, path] of routes) {
      test(`${method} ${path(':id')} releases once, then 404 with success false`, async () => {
        const service = `release-${method}`;
        const created = await post({ service, who: 'w' });
        const id = String(created.json.id);
        const released = await call(run.base, method, path(id), undefined, BODYLESS);
        assert.equal(released.status, 200);
        assert.deepEqual(released.json, { success: true, message: 'Lock released successfully' });
        const gone = await call(run.base, 'GET', `${API}/lock/${id}`);
        assert.equal(gone.status, 404);
        const again = await call(run.base, method, path(id), undefined, BODYLESS);
        assert.equal(again.status, 404);
        assert.deepEqual(again.json, { success: false, error: 'lock not found', code: 'LOCK_NOT_FOUND' });
        const unknown = await call(run.base, method, path('nope'), undefined, BODYLESS);
        assert.equal(unknown.status, 404);
        assert.equal(unknown.json.success, false);
        const retaken = await post({ service, who: 'next' });
        assert.equal(retaken.status, 201, 'the service is free again');
      });
    }

    test('POST /unlock with an empty JSON body still releases', async () => {
      const created = await post({ service: 'release-empty-json', who: 'w' });
      const released = await call(run.base, 'POST', `${API}/unlock/${created.json.id}`, '', {
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(released.status, 200);
    });
  });

  describe('GET /locks/list', () => {
    let list: Running;
    let made: Array<Record<string, unknown>>;
    before(async () => {
      list = await startApp();
      made = [];
      for (let i = 0; i < 7; i++) {
        const { json } = await call(list.base, 'POST', `${API}/lock`, {
          service: `list-${i}`,
          who: i % 2 ? 'odd' : 'even',
        });
        made.push(json);
        list.clock.advance(1500);
      }
    });
    after(async () => {
      await list.close();
    });

    test('defaults: page 1, per_page 100, oldest first', async () => {
      const { status, json } = await call(list.base, 'GET', `${API}/locks/list`);
      assert.equal(status, 200);
      assert.deepEqual(json, { locks: made, total: 7, page: 1, perPage: 100 });
    });

    test('pages with the true total; past the end is empty', async () => {
      const page2 = await call(list.base, 'GET', `${API}/locks/list?per_page=3&page=2`);
      assert.deepEqual(page2.json, { locks: made.slice(3, 6), total: 7, page: 2, perPage: 3 });
      const past = await call(list.base, 'GET', `${API}/locks/list?per_page=3&page=50`);
      assert.deepEqual(past.json, { locks: [], total: 7, page: 50, perPage: 3 });
      const max = await call(list.base, 'GET', `${API}/locks/list?per_page=1000`);
      assert.equal(max.status, 200);
      assert.equal(max.json.perPage, 1000);
    });

    test('exact filters on service and who', async () => {
      const odd = await call(list.base, 'GET', `${API}/locks/list?who=odd`);
      assert.deepEqual(
        (odd.json.locks as Array<{ service: string }>).map((lock) => lock.service),
        ['list-1', 'list-3', 'list-5'],
      );
      assert.equal(odd.json.total, 3);
      const one = await call(list.base, 'GET', `${API}/locks/list?service=list-4`);
      assert.deepEqual(one.json.locks, [made[4]]);
      const prefix = await call(list.base, 'GET', `${API}/locks/list?service=list`);
      assert.equal(prefix.json.total, 0, 'filters are exact, not prefixes');
      const both = await call(list.base, 'GET', `${API}/locks/list?service=list-4&who=odd`);
      assert.equal(both.json.total, 0);
    });

    test('released locks leave the list', async () => {
      const extra = await call(list.base, 'POST', `${API}/lock`, { service: 'list-extra', who: 'x' });
      await call(list.base, 'GET', `${API}/unlock/${extra.json.id}`);
      const { json } = await call(list.base, 'GET', `${API}/locks/list?service=list-extra`);
      assert.equal(json.total, 0);
    });

    const bad: Array<[string, string, RegExp]> = [
      ['page=0', 'page', /page must be a positive integer/],
      ['page=-1', 'page', /page must be a positive integer/],
      ['page=abc', 'page', /page must be a positive integer/],
      ['page=1.5', 'page', /page must be a positive integer/],
      ['per_page=0', 'per_page', /per_page must be a positive integer/],
      ['per_page=1001', 'per_page', /per_page must be an integer from 1 to 1000/],
      ['per_page=99999999999', 'per_page', /per_page must be a positive integer/],
      ['per_page=', 'per_page', /per_page must be a positive integer/],
      ['limit=5', 'limit', /unknown query parameter: limit/],
      [`service=${'x'.repeat(300)}`, 'service', /at most 256 characters/],
    ];
    for (const [query, field, message] of bad) {
      test(`400 for ${query.slice(0, 30)}`, async () => {
        const { status, json } = await call(list.base, 'GET', `${API}/locks/list?${query}`);
        assert.equal(status, 400);
        assert.equal(json.code, 'INVALID_ARGUMENT');
        assert.equal(json.field, field);
        assert.match(String(json.error), message);
      });
    }
  });

  test('a path that is not validly percent-encoded is a 400 with the JSON error shape and a stable code', async () => {
    for (const path of [
      `${API}/lock/%ff`,
      `${API}/unlock/%ff`,
      `${API}/queue/%E0%A4%A`,
      `${API}/lock/%c3%28/renew`,
      '/assets/%ff',
      '/%ff',
    ]) {
      const { status, json, headers } = await call(run.base, 'GET', path);
      assert.equal(status, 400, path);
      assert.deepEqual(
        json,
        { error: 'the URL is not validly percent-encoded', code: 'INVALID_ARGUMENT' },
        path,
      );
      assert.match(String(headers.get('content-type')), /^application\/json/, path);
    }
    const metrics = await (await fetch(`${run.base}/metrics`)).text();
    assert.match(metrics, /route="\(unmatched\)",status_code="400"\} [1-9]/, 'counted, by no URL');
  });

  test('unknown routes are a JSON 404', async () => {
    const { status, json } = await call(run.base, 'GET', '/api/v1alpha1/nothing');
    assert.equal(status, 404);
    assert.equal(json.code, 'NOT_FOUND');
  });

  test('healthz and readyz answer 200 while the store is fine', async () => {
    assert.equal((await call(run.base, 'GET', '/healthz')).status, 200);
    assert.equal((await call(run.base, 'GET', '/readyz')).status, 200);
  });
});

describe('REST API with --default-ttl 60 and --max-ttl 3600', () => {
  let run: Running;
  before(async () => {
    run = await startApp({ defaultTtlSeconds: 60, maxTtlSeconds: 3600 });
  });
  after(async () => {
    await run.close();
  });

  test('an acquire without ttlSeconds gets the default TTL', async () => {
    const { status, json } = await call(run.base, 'POST', `${API}/lock`, { service: 'defaulted', who: 'w' });
    assert.equal(status, 201);
    assert.equal(json.ttlSeconds, 60);
  });

  test('a TTL over --max-ttl is a 400 naming the limit, on acquire and on renew', async () => {
    const over = await call(run.base, 'POST', `${API}/lock`, {
      service: 'too-long',
      who: 'w',
      ttlSeconds: 3601,
    });
    assert.equal(over.status, 400);
    assert.deepEqual(over.json, {
      error: "ttlSeconds must be at most 3600 (the server's --max-ttl)",
      code: 'INVALID_ARGUMENT',
      field: 'ttlSeconds',
    });
    const ok = await call(run.base, 'POST', `${API}/lock`, {
      service: 'too-long',
      who: 'w',
      ttlSeconds: 3600,
    });
    assert.equal(ok.status, 201);
    const renew = await call(run.base, 'POST', `${API}/lock/${ok.json.id}/renew`, { ttlSeconds: 7200 });
    assert.equal(renew.status, 400);
    assert.equal(renew.json.field, 'ttlSeconds');
  });
});

describe('REST API when the store fails', () => {
  test('a store locked past its busy timeout answers 503 STORE_UNAVAILABLE, then serves again', async () => {
    const run = await startApp({ busyTimeoutMs: 50 });
    const blocker = new Database(run.path);
    blocker.exec('BEGIN IMMEDIATE');
    const { status, json } = await call(run.base, 'POST', `${API}/lock`, { service: 'busy', who: 'w' });
    assert.equal(status, 503);
    assert.deepEqual(json, { error: 'store unavailable', code: 'STORE_UNAVAILABLE' });
    blocker.exec('ROLLBACK');
    blocker.close();
    assert.equal((await call(run.base, 'POST', `${API}/lock`, { service: 'busy', who: 'w' })).status, 201);
    const metrics = await (await fetch(`${run.base}/metrics`)).text();
    assert.match(metrics, /^tracker_store_errors_total\{operation="acquire"\} 1$/m);
    assert.match(metrics, /^tracker_acquisitions_total\{result="failed"\} 1$/m);
    assert.match(metrics, /^tracker_acquisitions_total\{result="granted"\} 1$/m);
    assert.match(
      metrics,
      /^tracker_http_request_duration_seconds_count\{method="POST",route="\/api\/v1alpha1\/lock",status_code="503"\} 1$/m,
    );
    await run.close();
  });

  test('an unexpected failure answers 500 with no internals, and readyz turns 503', async () => {
    const run = await startApp();
    await run.store.close(); // every statement now throws "database connection is not open"
    const { status, json } = await call(run.base, 'POST', `${API}/lock`, { service: 'closed', who: 'w' });
    assert.equal(status, 500);
    assert.deepEqual(json, { error: 'internal error', code: 'INTERNAL' });
    const listed = await call(run.base, 'GET', `${API}/locks/list`);
    assert.equal(listed.status, 500);
    assert.equal(JSON.stringify(listed.json).includes('database'), false);
    assert.equal((await call(run.base, 'GET', '/readyz')).status, 503);
    assert.equal((await call(run.base, 'GET', '/healthz')).status, 200);
    await run.close();
  });
});
