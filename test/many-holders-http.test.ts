/**
 * The REST side of many holders (issue 16) on a real socket over a real SQLite file:
 * semaphores (`limit`), shared mode, registered resources and labels, groups, priorities,
 * their error codes and statuses, and the 400s naming the field.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { createGate } from '../src/auth/gate.js';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import { systemClock } from '../src/core/clock.js';
import type { LockStore } from '../src/core/lock-store.js';
import { createWatcherRegistry, DEFAULT_WATCH_LIMITS } from '../src/core/watchers.js';
import { buildHttpApp } from '../src/http/app.js';
import { createHostCheck } from '../src/http/request-guard.js';
import type { EventJson, GroupJson, LockJson, QueueJson, ResourceJson } from '../src/http/schemas.js';
import { createMetrics } from '../src/metrics.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService } from './support/lock-service.js';
import { API, call, type Reply } from './support/rest.js';
import { tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/** A POST without a body says it is no HTML form (request-guard.ts). */
const BODYLESS = { headers: { 'x-tracker': '1' } };
const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

interface Running {
  base: string;
  store: LockStore;
  app: FastifyInstance;
  close: () => Promise<void>;
}

/** The REST app on a real socket, over a real SQLite file, with the system clock. */
async function startApp(): Promise<Running> {
  const dir = tempDir();
  const store = openSqliteLockStore({ path: join(dir.path, 'tracker.db'), clock: systemClock });
  const watchers = createWatcherRegistry(DEFAULT_WATCH_LIMITS);
  const metrics = createMetrics({
    stats: () => store.stats(),
    resources: () => store.listResources(),
    watchers,
  });
  const { service, close } = createTestService(metrics.instrument(store), {
    owner: 'many-holders-http',
    onEvent: (event) => metrics.observe(event),
  });
  const app = buildHttpApp({
    service,
    watchers,
    gate: createGate({ authentication: AUTHENTICATION_OFF, limiter: null }),
    hosts: createHostCheck({ listenHost: '127.0.0.1', allowedHosts: [], machineHostname: 'many-holders' }),
    metrics,
    ready: () => store.ping(),
    logger: pino({ level: 'silent' }),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address && typeof address === 'object');
  return {
    base: `http://127.0.0.1:${address.port}`,
    store,
    app,
    close: async () => {
      await app.close();
      close();
      await store.close().catch(() => {});
      dir.remove();
    },
  };
}

describe('REST: many holders', () => {
  let run: Running;
  const post = (path: string, body: unknown, headers?: Record<string, string>) =>
    call(run.base, 'POST', `${API}${path}`, body, { headers });
  const lock = (body: Record<string, unknown>) => post('/lock', body);
  const group = (body: Record<string, unknown>, headers?: Record<string, string>) =>
    post('/locks', body, headers);
  const get = (path: string) => call(run.base, 'GET', `${API}${path}`);
  const del = (path: string) => call(run.base, 'DELETE', `${API}${path}`);
  const put = (name: string, body?: unknown) =>
    call(run.base, 'PUT', `${API}/resources/${encodeURIComponent(name)}`, body, BODYLESS);
  const release = (id: unknown) => del(`/lock/${String(id)}`);
  const held = async (service: string) =>
    ((await get(`/locks/list?service=${encodeURIComponent(service)}`)).json.locks as LockJson[]).map(
      (l) => l.id,
    );
  /** The answer's status and code, for one-line assertions. */
  const outcome = (reply: Reply) => [reply.status, reply.json.code ?? null];

  before(async () => {
    run = await startApp();
  });
  after(async () => {
    await run.close();
  });

  describe('semaphores: limit', () => {
    test('limit 3 admits three holders, each with its own id and a growing token; the fourth is LOCK_HELD with every holder', async () => {
      const service = unique('pool');
      const granted: LockJson[] = [];
      for (const who of ['a', 'b', 'c']) {
        const reply = await lock({ service, who, limit: 3 });
        assert.equal(reply.status, 201, JSON.stringify(reply.json));
        granted.push(reply.json as LockJson);
      }
      assert.equal(new Set(granted.map((l) => l.id)).size, 3);
      assert.deepEqual(
        granted.map((l) => [l.limit, l.mode, l.groupId]),
        [
          [3, 'exclusive', null],
          [3, 'exclusive', null],
          [3, 'exclusive', null],
        ],
      );
      const tokens = granted.map((l) => l.fencingToken);
      assert.deepEqual(
        [...tokens].sort((x, y) => x - y),
        tokens,
        'tokens grow per service across holders',
      );
      assert.equal(new Set(tokens).size, 3);

      const full = await lock({ service, who: 'd', limit: 3 });
      assert.deepEqual(outcome(full), [409, 'LOCK_HELD']);
      assert.equal(
        (full.json.existingLock as LockJson).id,
        granted[0]?.id,
        'existingLock: the oldest holder',
      );
      assert.deepEqual(
        (full.json.holders as LockJson[]).map((l) => l.id).sort(),
        granted.map((l) => l.id).sort(),
      );

      const queue = (await get(`/queue/${service}`)).json as QueueJson;
      assert.equal(queue.holder?.id, granted[0]?.id);
      assert.deepEqual(queue.holders.map((l) => l.id).sort(), granted.map((l) => l.id).sort());
      for (const l of granted) assert.equal((await release(l.id)).status, 200);
    });

    test('another limit while the service is held: 409 LIMIT_MISMATCH with the current limit, at once', async () => {
      const service = unique('mismatch');
      const first = await lock({ service, who: 'a', limit: 2 });
      assert.equal(first.status, 201);
      const other = await lock({ service, who: 'b', limit: 5, waitSeconds: 30 });
      assert.equal(other.status, 409);
      assert.deepEqual(other.json, {
        error: other.json.error,
        code: 'LIMIT_MISMATCH',
        field: 'limit',
        limit: 2,
        service,
      });
      assert.match(String(other.json.error), /limit 2/);
      // No limit means 1: also another limit.
      assert.deepEqual(outcome(await lock({ service, who: 'c' })), [409, 'LIMIT_MISMATCH']);
      const same = await lock({ service, who: 'd', limit: 2 });
      assert.equal(same.status, 201);
      await release(first.json.id);
      await release(same.json.id);
    });
  });

  describe('shared mode', () => {
    test('shared holders coexist; an exclusive request is refused with every holder; shared after exclusive too', async () => {
      const service = unique('shared');
      const readers = [];
      for (const who of ['r1', 'r2']) {
        const reply = await lock({ service, who, mode: 'shared' });
        assert.equal(reply.status, 201, JSON.stringify(reply.json));
        assert.equal(reply.json.mode, 'shared');
        readers.push(reply.json as LockJson);
      }
      const writer = await lock({ service, who: 'w' });
      assert.deepEqual(outcome(writer), [409, 'LOCK_HELD']);
      assert.equal((writer.json.holders as LockJson[]).length, 2);
      for (const reader of readers) await release(reader.id);

      const exclusive = await lock({ service, who: 'w' });
      assert.equal(exclusive.status, 201);
      assert.deepEqual(outcome(await lock({ service, who: 'r3', mode: 'shared' })), [409, 'LOCK_HELD']);
      await release(exclusive.json.id);
    });

    test('a waiting exclusive request is not overtaken by a later shared one', async () => {
      const service = unique('writer-first');
      const reader = await lock({ service, who: 'r1', mode: 'shared' });
      const writer = lock({ service, who: 'w', waitSeconds: 30 });
      await waitFor(async () => ((await get(`/queue/${service}`)).json as QueueJson).waiters.length === 1, {
        what: 'the writer in line',
      });
      assert.deepEqual(outcome(await lock({ service, who: 'r2', mode: 'shared' })), [409, 'LOCK_HELD']);
      await release(reader.json.id);
      const granted = await writer;
      assert.equal(granted.status, 201);
      assert.equal(granted.json.who, 'w');
      await release(granted.json.id);
    });
  });

  describe('resources and labels', () => {
    test('PUT creates (201) then replaces (200); GET one, GET by label, DELETE (204), then 404 RESOURCE_NOT_FOUND', async () => {
      const label = unique('android');
      const name = unique('pixel');
      const created = await put(name, {
        labels: [label, 'phones'],
        properties: { serial: 'ABC123', 'os-version': '14' },
        capacity: 2,
        description: 'the Pixel on the second shelf',
      });
      assert.equal(created.status, 201, JSON.stringify(created.json));
      assert.deepEqual(created.json as ResourceJson, {
        name,
        labels: [label, 'phones'],
        properties: { serial: 'ABC123', 'os-version': '14' },
        capacity: 2,
        description: 'the Pixel on the second shelf',
        holders: [],
        waiters: [],
        free: 2,
      });
      const replaced = await put(name, { labels: [label], properties: { serial: 'ABC123' } });
      assert.equal(replaced.status, 200);
      assert.deepEqual(
        [replaced.json.capacity, replaced.json.description, replaced.json.labels],
        [1, null, [label]],
      );
      assert.deepEqual((await get(`/resources/${name}`)).json, replaced.json);

      const other = unique('galaxy');
      assert.equal((await put(other, { labels: [label] })).status, 201);
      const listed = (await get(`/resources?label=${label}`)).json.resources as ResourceJson[];
      assert.deepEqual(
        listed.map((r) => r.name),
        [name, other].sort(),
        'by name',
      );
      const all = (await get('/resources')).json.resources as ResourceJson[];
      assert.ok(all.some((r) => r.name === name) && all.some((r) => r.name === other));

      const deleted = await del(`/resources/${name}`);
      assert.equal(deleted.status, 204);
      assert.deepEqual(deleted.json, {});
      assert.deepEqual(outcome(await get(`/resources/${name}`)), [404, 'RESOURCE_NOT_FOUND']);
      assert.deepEqual(outcome(await del(`/resources/${name}`)), [404, 'RESOURCE_NOT_FOUND']);
      assert.equal((await del(`/resources/${other}`)).status, 204);
    });

    test('a label given twice is kept once', async () => {
      const name = unique('twice');
      const created = await put(name, { labels: ['a', 'b', 'a'] });
      assert.equal(created.status, 201, JSON.stringify(created.json));
      assert.deepEqual(created.json.labels, ['a', 'b']);
      assert.equal((await del(`/resources/${name}`)).status, 204);
    });

    test('a PUT without a body registers a bare resource: no labels, no properties, capacity 1', async () => {
      const name = unique('bare');
      const created = await put(name);
      assert.equal(created.status, 201, JSON.stringify(created.json));
      assert.deepEqual(
        [created.json.labels, created.json.properties, created.json.capacity, created.json.free],
        [[], {}, 1, 1],
      );
      assert.equal((await del(`/resources/${name}`)).status, 204);
    });

    test('a label takes any free resource carrying it, with the resource on the lock; then LOCK_HELD; NO_SUCH_LABEL for none', async () => {
      const label = unique('android');
      const names = [unique('phone-a'), unique('phone-b')].sort();
      for (const [index, name] of names.entries()) {
        assert.equal((await put(name, { labels: [label], properties: { serial: `S${index}` } })).status, 201);
      }
      const first = await lock({ label, who: 'job-1', ttlSeconds: 60 });
      assert.equal(first.status, 201, JSON.stringify(first.json));
      const second = await lock({ label, who: 'job-2', ttlSeconds: 60 });
      assert.equal(second.status, 201);
      const taken = [first.json, second.json] as LockJson[];
      assert.deepEqual(taken.map((l) => l.service).sort(), names, 'two different resources');
      for (const l of taken) {
        assert.equal(l.resource?.name, l.service);
        assert.deepEqual(l.resource?.labels, [label]);
        assert.equal(l.resource?.properties.serial, `S${names.indexOf(l.service)}`);
      }
      const none = await lock({ label, who: 'job-3' });
      assert.deepEqual(outcome(none), [409, 'LOCK_HELD']);

      const resource = (await get(`/resources/${names[0]}`)).json as ResourceJson;
      assert.deepEqual([resource.free, resource.holders.length], [0, 1]);
      assert.deepEqual(outcome(await del(`/resources/${names[0]}`)), [409, 'RESOURCE_IN_USE']);

      const missing = unique('no-such');
      const unknown = await lock({ label: missing, who: 'job-4' });
      assert.equal(unknown.status, 404);
      assert.deepEqual(unknown.json, {
        error: unknown.json.error,
        code: 'NO_SUCH_LABEL',
        field: 'label',
        label: missing,
      });
      for (const l of taken) await release(l.id);
      for (const name of names) assert.equal((await del(`/resources/${name}`)).status, 204);
    });

    test("a registered resource's capacity is its limit: another limit is LIMIT_MISMATCH", async () => {
      const name = unique('runner');
      await put(name, { capacity: 2 });
      const one = await lock({ service: name, who: 'a' });
      assert.equal(one.status, 201);
      assert.equal(one.json.limit, 2);
      assert.equal((one.json.resource as { name: string } | null)?.name, name);
      const wrong = await lock({ service: name, who: 'b', limit: 3 });
      assert.deepEqual([wrong.status, wrong.json.code, wrong.json.limit], [409, 'LIMIT_MISMATCH', 2]);
      await release(one.json.id);
      await del(`/resources/${name}`);
    });
  });

  describe('groups', () => {
    test('POST /locks takes every claim at once: 201 {id, locks}, each lock carrying the groupId; GET, renew, DELETE act on all', async () => {
      const [a, b] = [unique('db'), unique('cache')];
      const made = await group({
        who: 'deploy-7',
        ttlSeconds: 60,
        locks: [{ service: a }, { service: b, mode: 'shared' }],
      });
      assert.equal(made.status, 201, JSON.stringify(made.json));
      const body = made.json as GroupJson;
      assert.deepEqual(Object.keys(body).sort(), ['id', 'locks']);
      assert.deepEqual(
        body.locks.map((l) => [l.service, l.mode, l.groupId, l.who]).sort(),
        [
          [a, 'exclusive', body.id, 'deploy-7'],
          [b, 'shared', body.id, 'deploy-7'],
        ].sort(),
      );
      assert.deepEqual(((await get(`/locks/${body.id}`)).json as GroupJson).locks.length, 2);

      const renewed = await post(`/locks/${body.id}/renew`, { ttlSeconds: 120 });
      assert.equal(renewed.status, 200);
      assert.deepEqual(
        (renewed.json as GroupJson).locks.map((l) => l.ttlSeconds),
        [120, 120],
      );
      // No body: each lock's own TTL again.
      const again = await call(run.base, 'POST', `${API}/locks/${body.id}/renew`, undefined, BODYLESS);
      assert.equal(again.status, 200, JSON.stringify(again.json));

      // A member released alone by its own id; the group keeps the other.
      const [member] = body.locks;
      assert.equal((await release(member?.id)).status, 200);
      assert.deepEqual(
        ((await get(`/locks/${body.id}`)).json as GroupJson).locks.map((l) => l.id),
        body.locks.slice(1).map((l) => l.id),
      );

      const released = await del(`/locks/${body.id}`);
      assert.equal(released.status, 200);
      assert.deepEqual(
        (released.json as GroupJson).locks.map((l) => l.id),
        body.locks.slice(1).map((l) => l.id),
        'what was released',
      );
      assert.deepEqual(await held(a), []);
      assert.deepEqual(await held(b), []);
      assert.deepEqual(outcome(await get(`/locks/${body.id}`)), [404, 'LOCK_NOT_FOUND']);
      assert.deepEqual(outcome(await del(`/locks/${body.id}`)), [404, 'LOCK_NOT_FOUND']);
      assert.deepEqual(outcome(await post(`/locks/${body.id}/renew`, {})), [404, 'LOCK_NOT_HELD']);
      assert.deepEqual(outcome(await get(`/locks/${randomUUID()}`)), [404, 'LOCK_NOT_FOUND']);
      assert.deepEqual(outcome(await get('/locks/not-a-uuid')), [404, 'LOCK_NOT_FOUND']);
    });

    test('all or nothing: one held claim refuses the group with LOCK_HELD naming it, and nothing is taken', async () => {
      const [a, b] = [unique('x'), unique('y')];
      const holder = await lock({ service: b, who: 'other' });
      const refused = await group({ who: 'g', locks: [{ service: a }, { service: b }] });
      assert.deepEqual(outcome(refused), [409, 'LOCK_HELD']);
      assert.equal((refused.json.existingLock as LockJson).id, holder.json.id);
      assert.deepEqual(
        (refused.json.holders as LockJson[]).map((l) => l.id),
        [holder.json.id],
      );
      assert.deepEqual(await held(a), [], 'no part of the group is held');
      await release(holder.json.id);
    });

    test('a waiting group takes everything once the last part frees, and [a,b] with [b,a] never deadlock', async () => {
      const [a, b] = [unique('left'), unique('right')];
      const blocker = await lock({ service: a, who: 'blocker' });
      const first = group({ who: 'ab', waitSeconds: 30, locks: [{ service: a }, { service: b }] });
      await waitFor(async () => ((await get(`/queue/${a}`)).json as QueueJson).waiters.length === 1, {
        what: 'the group in line',
      });
      const waiter = ((await get(`/queue/${a}`)).json as QueueJson).waiters[0];
      assert.equal(waiter?.who, 'ab');
      assert.equal(typeof waiter?.groupId, 'string');
      assert.deepEqual(await held(b), [], 'a waiting group holds nothing');
      const second = group({ who: 'ba', waitSeconds: 30, locks: [{ service: b }, { service: a }] });
      await release(blocker.json.id);
      const one = await first;
      assert.equal(one.status, 201, JSON.stringify(one.json));
      await del(`/locks/${String(one.json.id)}`);
      const two = await second;
      assert.equal(two.status, 201, JSON.stringify(two.json));
      await del(`/locks/${String(two.json.id)}`);
    });

    test('a label with a quantity takes that many distinct resources', async () => {
      const label = unique('gpu');
      const names = [unique('gpu-0'), unique('gpu-1'), unique('gpu-2')];
      for (const name of names) await put(name, { labels: [label], properties: { memory: '24G' } });
      const made = await group({ who: 'training', locks: [{ label, quantity: 2 }] });
      assert.equal(made.status, 201, JSON.stringify(made.json));
      const locks = (made.json as GroupJson).locks;
      assert.equal(new Set(locks.map((l) => l.service)).size, 2);
      for (const l of locks) assert.equal(l.resource?.properties.memory, '24G');
      assert.deepEqual(outcome(await group({ who: 'more', locks: [{ label, quantity: 2 }] })), [
        409,
        'LOCK_HELD',
      ]);
      assert.deepEqual(outcome(await group({ who: 'none', locks: [{ label: unique('none') }] })), [
        404,
        'NO_SUCH_LABEL',
      ]);
      await del(`/locks/${String(made.json.id)}`);
      for (const name of names) await del(`/resources/${name}`);
    });

    test('an Idempotency-Key replays the group: 200 and Idempotent-Replayed', async () => {
      const service = unique('idem');
      const key = randomUUID();
      const body = { who: 'retry', locks: [{ service }] };
      const first = await group(body, { 'idempotency-key': key });
      assert.equal(first.status, 201);
      const again = await group(body, { 'idempotency-key': key });
      assert.equal(again.status, 200);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal(again.json.id, first.json.id);
      await del(`/locks/${String(first.json.id)}`);
    });
  });

  describe('priority and the queue', () => {
    test('higher priority is granted first; the queue shows priority, mode, label and groupId of each waiter', async () => {
      const service = unique('prio');
      const holder = await lock({ service, who: 'holder' });
      const low = lock({ service, who: 'low', waitSeconds: 30 });
      await waitFor(async () => ((await get(`/queue/${service}`)).json as QueueJson).waiters.length === 1, {
        what: 'the low waiter in line',
      });
      const high = lock({ service, who: 'high', waitSeconds: 30, priority: 10 });
      const queue = await waitFor(
        async () => {
          const q = (await get(`/queue/${service}`)).json as QueueJson;
          return q.waiters.length === 2 ? q : null;
        },
        { what: 'both waiters in line' },
      );
      assert.deepEqual(
        queue.waiters.map((w) => [w.who, w.position, w.priority, w.mode, w.label, w.groupId]),
        [
          ['high', 1, 10, 'exclusive', null, null],
          ['low', 2, 0, 'exclusive', null, null],
        ],
      );
      await release(holder.json.id);
      const first = await high;
      assert.equal(first.status, 201);
      await release(first.json.id);
      const second = await low;
      assert.equal(second.status, 201);
      await release(second.json.id);
    });

    test('WAIT_TIMEOUT names every holder', async () => {
      const service = unique('timeout');
      const one = await lock({ service, who: 'a', limit: 2 });
      const two = await lock({ service, who: 'b', limit: 2 });
      const late = await lock({ service, who: 'c', limit: 2, waitSeconds: 1 });
      assert.deepEqual(outcome(late), [409, 'WAIT_TIMEOUT']);
      assert.equal((late.json.existingLock as LockJson).id, one.json.id);
      assert.deepEqual(
        (late.json.holders as LockJson[]).map((l) => l.id).sort(),
        [one.json.id, two.json.id].sort(),
      );
      await release(one.json.id);
      await release(two.json.id);
    });
  });

  test('history events carry groupId and label, and their lock its limit, mode and groupId', async () => {
    const service = unique('events');
    const made = await group({ who: 'historian', locks: [{ service, limit: 4 }] });
    assert.equal(made.status, 201);
    await del(`/locks/${String(made.json.id)}`);
    const events = (await get(`/history?service=${service}`)).json.events as EventJson[];
    assert.deepEqual(
      events.map((e) => [e.type, e.groupId, e.label, e.lock.limit, e.lock.mode, e.lock.groupId]),
      [
        ['released', made.json.id, null, 4, 'exclusive', made.json.id],
        ['acquired', made.json.id, null, 4, 'exclusive', made.json.id],
      ],
    );
  });

  describe('400 naming the field', () => {
    const invalidLock: Array<[string, Record<string, unknown>, string, RegExp]> = [
      ['neither service nor label', { who: 'w' }, 'service', /service is required \(or label/],
      ['both service and label', { service: 's', label: 'l', who: 'w' }, 'label', /not both/],
      ['limit with shared', { service: 's', who: 'w', limit: 2, mode: 'shared' }, 'limit', /exclusive/],
      ['limit with label', { label: 'l', who: 'w', limit: 2 }, 'limit', /capacity is its limit/],
      ['limit 0', { service: 's', who: 'w', limit: 0 }, 'limit', /integer from 1 to 1000/],
      ['limit 1001', { service: 's', who: 'w', limit: 1001 }, 'limit', /integer from 1 to 1000/],
      ['limit fractional', { service: 's', who: 'w', limit: 1.5 }, 'limit', /integer from 1 to 1000/],
      ['limit a string', { service: 's', who: 'w', limit: '2' }, 'limit', /integer from 1 to 1000/],
      ['unknown mode', { service: 's', who: 'w', mode: 'read' }, 'mode', /one of exclusive, shared/],
      ['priority over 1000', { service: 's', who: 'w', priority: 1001 }, 'priority', /-1000 to 1000/],
      ['priority under -1000', { service: 's', who: 'w', priority: -1001 }, 'priority', /-1000 to 1000/],
      ['label with a control character', { label: 'a\u0007', who: 'w' }, 'label', /control characters/],
      ['empty label', { label: '', who: 'w' }, 'label', /non-empty/],
      ['quantity on a single acquire', { label: 'l', who: 'w', quantity: 2 }, 'quantity', /unknown field/],
    ];
    for (const [name, body, field, message] of invalidLock) {
      test(`POST /lock: ${name}`, async () => {
        const { status, json } = await lock(body);
        assert.deepEqual([status, json.code, json.field], [400, 'INVALID_ARGUMENT', field]);
        assert.match(String(json.error), message);
      });
    }

    const claims = (count: number) => Array.from({ length: count }, (_, i) => ({ service: `s${i}` }));
    const invalidGroup: Array<[string, Record<string, unknown>, string, RegExp]> = [
      ['no locks', { who: 'w' }, 'locks', /locks is required/],
      ['empty locks', { who: 'w', locks: [] }, 'locks', /1 to 32 claims/],
      ['33 claims', { who: 'w', locks: claims(33) }, 'locks', /1 to 32 claims/],
      ['a claim that is no object', { who: 'w', locks: ['s'] }, 'locks[0]', /must be an object/],
      ['a claim with neither', { who: 'w', locks: [{ service: 'a' }, {}] }, 'locks[1].service', /required/],
      [
        'a claim with both',
        { who: 'w', locks: [{ service: 'a', label: 'l' }] },
        'locks[0].label',
        /not both/,
      ],
      ['limit with label', { who: 'w', locks: [{ label: 'l', limit: 2 }] }, 'locks[0].limit', /capacity/],
      [
        'limit with shared',
        { who: 'w', locks: [{ service: 'a', limit: 2, mode: 'shared' }] },
        'locks[0].limit',
        /exclusive/,
      ],
      [
        'quantity with a service',
        { who: 'w', locks: [{ service: 'a', quantity: 2 }] },
        'locks[0].quantity',
        /label only/,
      ],
      ['quantity 33', { who: 'w', locks: [{ label: 'l', quantity: 33 }] }, 'locks[0].quantity', /1 to 32/],
      [
        'unknown claim field',
        { who: 'w', locks: [{ service: 'a', ttl: 5 }] },
        'locks[0].ttl',
        /unknown field/,
      ],
      ['bad claim limit', { who: 'w', locks: [{ service: 'a', limit: 0 }] }, 'locks[0].limit', /1 to 1000/],
      ['bad priority', { who: 'w', priority: 2000, locks: [{ service: 'a' }] }, 'priority', /-1000 to 1000/],
      [
        'service with an invisible character',
        { who: 'w', locks: [{ service: 'a\u200b' }] },
        'locks[0].service',
        /invisible/,
      ],
    ];
    for (const [name, body, field, message] of invalidGroup) {
      test(`POST /locks: ${name}`, async () => {
        const { status, json } = await group(body);
        assert.deepEqual([status, json.code, json.field], [400, 'INVALID_ARGUMENT', field]);
        assert.match(String(json.error), message);
      });
    }

    test('POST /locks/{groupId}/renew: a bad ttlSeconds', async () => {
      const { status, json } = await post(`/locks/${randomUUID()}/renew`, { ttlSeconds: 0 });
      assert.deepEqual([status, json.code, json.field], [400, 'INVALID_ARGUMENT', 'ttlSeconds']);
    });

    const labels = (count: number) => Array.from({ length: count }, (_, i) => `l${i}`);
    const properties = (count: number) => Object.fromEntries(labels(count).map((key) => [key, 'v']));
    const invalidResource: Array<[string, unknown, string, RegExp]> = [
      ['capacity 0', { capacity: 0 }, 'capacity', /1 to 1000/],
      ['capacity a string', { capacity: '2' }, 'capacity', /1 to 1000/],
      ['33 labels', { labels: labels(33) }, 'labels', /at most 32 labels/],
      ['a label with a control character', { labels: ['ok', 'b\u0007'] }, 'labels[1]', /control characters/],
      ['an empty label', { labels: [''] }, 'labels[0]', /non-empty/],
      ['labels not an array', { labels: 'a' }, 'labels', /must be an array of labels/],
      ['65 properties', { properties: properties(65) }, 'properties', /at most 64 properties/],
      [
        'a property value that is no string',
        { properties: { serial: 7 } },
        'properties.serial',
        /must be a string/,
      ],
      [
        'a numeric property key with no string value',
        { properties: { '0': 5 } },
        'properties.0',
        /must be a string/,
      ],
      [
        'a property value too long',
        { properties: { serial: 'x'.repeat(1025) } },
        'properties.serial',
        /1024/,
      ],
      [
        'a property value with a control character',
        { properties: { a: 'x\u0000' } },
        'properties.a',
        /control/,
      ],
      ['a property key with a control character', { properties: { 'k\u0007': 'v' } }, 'properties', /keys/],
      ['a description with a control character', { description: 'a\u001b[31m' }, 'description', /control/],
      ['an unknown field', { owner: 'me' }, 'owner', /unknown field/],
    ];
    for (const [name, body, field, message] of invalidResource) {
      test(`PUT /resources/{name}: ${name}`, async () => {
        const { status, json } = await put(unique('bad'), body);
        assert.deepEqual([status, json.code, json.field], [400, 'INVALID_ARGUMENT', field]);
        assert.match(String(json.error), message);
      });
    }

    test('a resource name with a control character, in the path: 400 naming it', async () => {
      for (const reply of [
        await put('bad\u0007name', {}),
        await get(`/resources/${encodeURIComponent('bad\u0007name')}`),
        await del(`/resources/${encodeURIComponent('a\u202eb')}`),
      ]) {
        assert.deepEqual(
          [reply.status, reply.json.code, reply.json.field],
          [400, 'INVALID_ARGUMENT', 'name'],
        );
      }
    });

    test('GET /resources with a bad label or an unknown parameter', async () => {
      const bad = await get(`/resources?label=${encodeURIComponent('a\u0007')}`);
      assert.deepEqual([bad.status, bad.json.field], [400, 'label']);
      const unknown = await get('/resources?name=x');
      assert.deepEqual([unknown.status, unknown.json.field], [400, 'name']);
    });
  });
});
