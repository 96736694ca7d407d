import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { API, call } from './support/rest.js';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';
import { openSse, type SseMessage, type SseStream } from './support/sse.js';

interface LockJson {
  id: string;
  service: string;
  who: string;
  createdAt: string;
  ttlSeconds: number | null;
  expiresAt: string | null;
  fencingToken: number | null;
  waiters: number;
}

interface EventJson {
  id: number;
  type: string;
  at: string;
  service: string;
  who: string;
  lock: LockJson;
  heldSeconds: number | null;
  reason: string | null;
}

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const event = (message: SseMessage) => message.json as unknown as EventJson;

describe('watch stream, history and force release over REST (real server, SQLite file)', () => {
  const dir = tempDir();
  const database = `sqlite:${join(dir.path, 'tracker.db')}`;
  let server: ServerProcess;
  const start = () =>
    startServerProcess({ args: ['--http-port', '0', '--grpc-port', '0', '--database-url', database] });
  const rest = (method: string, path: string, body?: unknown, headers?: Record<string, string>) =>
    call(server.baseUrl, method, `${API}${path}`, body, { headers });
  const acquire = async (service: string, who: string, extra: Record<string, unknown> = {}) => {
    const reply = await rest('POST', '/lock', { service, who, ...extra });
    assert.equal(reply.status, 201, JSON.stringify(reply.json));
    return reply.json as unknown as LockJson;
  };
  const watch = (query = '', headers: Record<string, string> = {}) =>
    openSse(`${server.baseUrl}${API}/watch${query}`, headers);
  /** The events of one service from a stream, until `count` of them arrived. */
  const eventsOf = async (stream: SseStream, service: string, count: number) => {
    const seen: EventJson[] = [];
    await stream.until((message) => {
      if (message.event !== 'snapshot' && event(message).service === service) seen.push(event(message));
      return seen.length >= count;
    });
    return seen;
  };

  before(async () => {
    server = await start();
  });
  after(async () => {
    await server?.stop();
    dir.remove();
  });

  test('a watcher gets the held locks, then every change in order, each with its lock and id', async () => {
    const service = unique('deploy');
    const held = await acquire(unique('held-before'), 'early-bird');
    const stream = await watch();
    try {
      assert.equal(stream.status, 200);
      assert.match(stream.headers.get('content-type') ?? '', /^text\/event-stream/);
      const snapshot = await stream.next();
      assert.equal(snapshot.event, 'snapshot');
      const { eventId, locks } = snapshot.json as { eventId: number; locks: LockJson[] };
      assert.equal(snapshot.id, String(eventId));
      assert.ok(locks.some((lock) => lock.id === held.id && lock.who === 'early-bird'));

      const lock = await acquire(service, 'ci-1', { ttlSeconds: 60 });
      const renewed = await rest('POST', `/lock/${lock.id}/renew`, { ttlSeconds: 120 });
      assert.equal(renewed.status, 200);
      const waiting = rest('POST', '/lock', { service, who: 'ci-2', waitSeconds: 30 });
      await eventsOf(stream, service, 2);
      const queued = await stream.until((message) => message.event === 'queued');
      assert.equal(event(queued.at(-1) as SseMessage).who, 'ci-2');
      const forced = await rest('POST', `/lock/${lock.id}/force-release`, { reason: 'runner died' });
      assert.equal(forced.status, 200);
      const granted = (await waiting).json as unknown as LockJson;
      assert.equal(granted.who, 'ci-2');
      const released = await rest('DELETE', `/lock/${granted.id}`);
      assert.equal(released.status, 200);

      const rest_ = await eventsOf(stream, service, 4);
      const all = [...rest_];
      assert.deepEqual(
        all.map((e) => [e.type, e.who, e.reason]),
        [
          ['force-released', 'ci-1', 'runner died'],
          ['dequeued', 'ci-2', 'granted'],
          ['acquired', 'ci-2', null],
          ['released', 'ci-2', null],
        ],
      );
      const forcedEvent = all[0];
      assert.ok(forcedEvent);
      assert.equal(forcedEvent.lock.id, lock.id);
      assert.equal(forcedEvent.lock.ttlSeconds, 120);
      assert.equal(forcedEvent.lock.fencingToken, lock.fencingToken);
      assert.ok(forcedEvent.heldSeconds !== null && forcedEvent.heldSeconds >= 0);
      assert.match(forcedEvent.at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      assert.equal(all[2]?.lock.id, granted.id);
      const ids = all.map((e) => e.id);
      assert.deepEqual(
        ids,
        [...ids].sort((a, b) => a - b),
      );
      assert.ok((ids[0] ?? 0) > eventId);
    } finally {
      stream.close();
    }
  });

  test('the first events of a lock come in order: acquired, renewed, queued, with increasing ids', async () => {
    const service = unique('ordered');
    const stream = await watch(`?service=${service}`);
    try {
      const snapshot = await stream.next();
      assert.deepEqual((snapshot.json as { locks: unknown[] }).locks, []);
      const lock = await acquire(service, 'holder', { ttlSeconds: 30 });
      await rest('POST', `/lock/${lock.id}/renew`, undefined, { 'x-tracker': '1' });
      const waiter = rest('POST', '/lock', { service, who: 'waiter', waitSeconds: 1 });
      const seen = await eventsOf(stream, service, 4);
      assert.deepEqual(
        seen.map((e) => [e.type, e.who, e.lock.waiters]),
        [
          ['acquired', 'holder', 0],
          ['renewed', 'holder', 0],
          ['queued', 'waiter', 1],
          ['dequeued', 'waiter', 0],
        ],
      );
      assert.equal(seen[3]?.reason, 'left', 'the waiter timed out');
      assert.equal(seen[2]?.lock.fencingToken, null, 'a waiter has no token yet');
      assert.equal((await waiter).status, 409);
      const sseIds = seen.map((e) => e.id);
      assert.ok(sseIds.every((id, i) => i === 0 || id > (sseIds[i - 1] ?? 0)));
    } finally {
      stream.close();
    }
  });

  test('a lease that runs out is announced as expired without any request', async () => {
    const service = unique('lease');
    const stream = await watch(`?service=${service}`);
    try {
      await stream.next();
      const lock = await acquire(service, 'crashed-job', { ttlSeconds: 1 });
      const [acquired, expired] = await eventsOf(stream, service, 2);
      assert.equal(acquired?.type, 'acquired');
      assert.equal(expired?.type, 'expired');
      assert.equal(expired?.lock.id, lock.id);
      assert.equal(expired?.heldSeconds, 1);
    } finally {
      stream.close();
    }
  });

  test('the service filter sends only that service, in the snapshot and after', async () => {
    const mine = unique('mine');
    const other = unique('other');
    await acquire(mine, 'a');
    await acquire(other, 'b');
    const stream = await watch(`?service=${encodeURIComponent(mine)}`);
    try {
      const snapshot = await stream.next();
      assert.deepEqual(
        (snapshot.json as { locks: LockJson[] }).locks.map((lock) => lock.service),
        [mine],
      );
      await acquire(`${other}-2`, 'c');
      const lock = (await rest('GET', `/locks/list?service=${mine}`)).json as { locks: LockJson[] };
      await rest('DELETE', `/lock/${lock.locks[0]?.id}`);
      const next = await stream.next();
      assert.deepEqual([next.event, event(next).service], ['released', mine]);
    } finally {
      stream.close();
    }
  });

  test('Last-Event-ID resumes with exactly the missed events, no snapshot; so does a restart', async () => {
    const service = unique('resume');
    const first = await watch(`?service=${service}`);
    const a = await acquire(service, 'a');
    const [seen] = await eventsOf(first, service, 1);
    first.close();
    assert.ok(seen);
    await rest('DELETE', `/lock/${a.id}`);
    const b = await acquire(service, 'b');
    await rest('POST', `/lock/${b.id}/force-release`, undefined, { 'x-tracker': '1' });

    const resumed = await watch(`?service=${service}`, { 'Last-Event-ID': String(seen.id) });
    try {
      const missed = await resumed.until((message) => message.event === 'force-released');
      assert.deepEqual(
        missed.map((message) => [message.event, event(message).who]),
        [
          ['released', 'a'],
          ['acquired', 'b'],
          ['force-released', 'b'],
        ],
      );
      const lastId = missed.at(-1)?.id;
      assert.ok(lastId);
      // Then it is live, and nothing was repeated: a repeat would come before the next event.
      const c = await acquire(service, 'c');
      const live = await resumed.until((message) => message.event === 'acquired');
      assert.deepEqual(
        live.map((message) => [message.event, event(message).who]),
        [['acquired', 'c']],
        'nothing repeated after the missed events',
      );

      // The server restarts: its memory is gone, the history on disk is not.
      resumed.close();
      await server.stop();
      server = await start();
      const afterRestart = await watch('', { 'Last-Event-ID': lastId });
      try {
        const [only] = await afterRestart.until((message) => message.event === 'acquired');
        assert.equal(only?.event, 'acquired');
        assert.equal(event(only as SseMessage).lock.id, c.id);
        assert.equal(Number(only?.id), Number(lastId) + 1);
      } finally {
        afterRestart.close();
      }
    } finally {
      resumed.close();
    }
  });

  test('a resume from an id the server never gave gets a fresh snapshot; bad ids are a 400', async () => {
    const stream = await watch('', { 'Last-Event-ID': '999999999999' });
    try {
      assert.equal((await stream.next()).event, 'snapshot');
    } finally {
      stream.close();
    }
    const query = await watch('?lastEventId=0');
    try {
      const first = await query.next();
      assert.notEqual(first.event, 'snapshot', 'resuming from 0 replays the whole history');
    } finally {
      query.close();
    }
    for (const [path, headers, field] of [
      ['/watch', { 'Last-Event-ID': 'abc' }, 'Last-Event-ID'],
      ['/watch?lastEventId=-1', {}, 'lastEventId'],
      ['/watch?service=', {}, 'service'],
      ['/watch?nope=1', {}, 'nope'],
    ] as const) {
      const reply = await rest('GET', path, undefined, headers);
      assert.equal(reply.status, 400, path);
      assert.equal(reply.json.field, field, path);
      assert.equal(reply.json.code, 'INVALID_ARGUMENT');
    }
  });

  test('history: newest first, filtered, paged, with hold times and the force-release reason', async () => {
    const service = unique('history');
    const a = await acquire(service, 'alice');
    await rest('DELETE', `/lock/${a.id}`);
    const b = await acquire(service, 'bob');
    await rest('POST', `/lock/${b.id}/force-release`, { reason: 'stuck <b>since</b> 3h' });
    await acquire(unique('elsewhere'), 'alice');

    const all = await rest('GET', `/history?service=${service}`);
    assert.equal(all.status, 200);
    const events = all.json.events as EventJson[];
    assert.deepEqual(
      events.map((e) => [e.type, e.who]),
      [
        ['force-released', 'bob'],
        ['acquired', 'bob'],
        ['released', 'alice'],
        ['acquired', 'alice'],
      ],
    );
    assert.equal(all.json.nextBefore, null);
    assert.equal(events[0]?.reason, 'stuck <b>since</b> 3h');
    assert.ok(typeof events[0]?.heldSeconds === 'number');
    assert.ok(typeof events[2]?.heldSeconds === 'number');
    assert.equal(events[1]?.heldSeconds, null);

    const byWho = (await rest('GET', `/history?service=${service}&who=alice`)).json.events as EventJson[];
    assert.deepEqual(
      byWho.map((e) => e.type),
      ['released', 'acquired'],
    );
    const page1 = await rest('GET', `/history?service=${service}&limit=3`);
    assert.equal((page1.json.events as unknown[]).length, 3);
    const nextBefore = page1.json.nextBefore as number;
    assert.equal(nextBefore, (page1.json.events as EventJson[])[2]?.id);
    const page2 = await rest('GET', `/history?service=${service}&limit=3&before=${nextBefore}`);
    assert.deepEqual(
      (page2.json.events as EventJson[]).map((e) => [e.type, e.who]),
      [['acquired', 'alice']],
    );
    assert.equal(page2.json.nextBefore, null);

    const future = new Date(Date.now() + 3_600_000).toISOString();
    assert.deepEqual((await rest('GET', `/history?service=${service}&since=${future}`)).json.events, []);
    const untilNow = await rest('GET', `/history?service=${service}&until=${encodeURIComponent(future)}`);
    assert.equal((untilNow.json.events as unknown[]).length, 4);
    const offset = await rest('GET', `/history?service=${service}&since=2020-01-01T00:00:00%2B02:00`);
    assert.equal((offset.json.events as unknown[]).length, 4, 'an offset timestamp is accepted');
  });

  test('history rejects bad parameters with a 400 naming each', async () => {
    for (const [query, field] of [
      ['limit=0', 'limit'],
      ['limit=1001', 'limit'],
      ['limit=ten', 'limit'],
      ['since=yesterday', 'since'],
      ['until=2026-13-45T99:99:99Z', 'until'],
      ['since=2024-02-30T00:00:00Z', 'since'],
      ['until=2023-02-29T12:00:00Z', 'until'],
      ['since=2024-04-31T10:00:00Z', 'since'],
      ['since=2024-01-15T24:00:00Z', 'since'],
      ['until=2024-01-15T10:59:60Z', 'until'],
      ['since=2024-01-15T10:00:00%2B24:00', 'since'],
      ['before=0', 'before'],
      ['before=-3', 'before'],
      ['service=', 'service'],
      ['who=%01', 'who'],
      ['page=2', 'page'],
    ] as const) {
      const reply = await rest('GET', `/history?${query}`);
      assert.equal(reply.status, 400, query);
      assert.equal(reply.json.field, field, query);
      assert.equal(reply.json.code, 'INVALID_ARGUMENT', query);
    }
  });

  test('force release: any holder, optional body; 404 once gone; bad reasons are a 400', async () => {
    const service = unique('force');
    const lock = await acquire(service, 'stuck');
    // No body at all: a header says it is no HTML form (curl -X POST -H 'X-Tracker: 1').
    const bare = await call(server.baseUrl, 'POST', `${API}/lock/${lock.id}/force-release`, undefined, {
      headers: { 'x-tracker': '1' },
    });
    assert.equal(bare.status, 200);
    assert.equal(bare.json.success, true);
    assert.equal(bare.json.message, 'Lock force-released');
    assert.equal((bare.json.lock as LockJson).id, lock.id);
    assert.equal((await rest('GET', `/lock/${lock.id}`)).status, 404);
    const again = await rest('POST', `/lock/${lock.id}/force-release`, { reason: 'twice' });
    assert.equal(again.status, 404);
    assert.equal(again.json.code, 'LOCK_NOT_FOUND');
    assert.equal((await rest('POST', `/lock/not-a-uuid/force-release`, {})).status, 404);

    const held = await acquire(service, 'next');
    for (const [body, field] of [
      [{ reason: 'x'.repeat(1025) }, 'reason'],
      [{ reason: 'line\nbreak' }, 'reason'],
      [{ reason: 42 }, 'reason'],
      [{ why: 'typo' }, 'why'],
    ] as const) {
      const reply = await rest('POST', `/lock/${held.id}/force-release`, body);
      assert.equal(reply.status, 400, JSON.stringify(body));
      assert.equal(reply.json.field, field);
    }
    assert.equal(
      (await rest('GET', `/lock/${held.id}`)).status,
      200,
      'a refused force release changes nothing',
    );
    const history = (await rest('GET', `/history?service=${service}`)).json.events as EventJson[];
    assert.deepEqual(
      history.map((e) => [e.type, e.reason]),
      [
        ['acquired', null],
        ['force-released', null],
        ['acquired', null],
      ],
    );
  });

  test('metrics: Prometheus text whose values follow known operations', async () => {
    const read = async () => {
      const response = await fetch(`${server.baseUrl}/metrics`);
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      return parseMetrics(await response.text());
    };
    const before = await read();
    const service = unique('metrics');
    const a = await acquire(service, 'a');
    assert.equal((await rest('POST', '/lock', { service, who: 'b' })).status, 409);
    assert.equal((await rest('POST', '/lock', { service, who: 'c', waitSeconds: 1 })).status, 409);
    await rest('DELETE', `/lock/${a.id}`);
    const b = await acquire(service, 'b');
    await rest('POST', `/lock/${b.id}/force-release`, undefined, { 'x-tracker': '1' });
    const held = await acquire(unique('metrics-held'), 'keeps');
    const after = await read();
    const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);

    assert.equal(delta('tracker_acquisitions_total{result="granted"}'), 3);
    assert.equal(delta('tracker_acquisitions_total{result="held"}'), 1);
    assert.equal(delta('tracker_acquisitions_total{result="timeout"}'), 1);
    assert.equal(delta('tracker_releases_total{kind="released"}'), 1);
    assert.equal(delta('tracker_releases_total{kind="force-released"}'), 1);
    assert.equal(delta('tracker_lock_hold_seconds_count{kind="released"}'), 1);
    assert.equal(delta('tracker_acquire_duration_seconds_count{result="granted"}'), 3);
    assert.equal(delta('tracker_locks_held'), 1);
    assert.ok(after.has('tracker_waiters'));
    assert.ok(after.has('tracker_watchers'));
    assert.ok(
      delta(
        'tracker_http_request_duration_seconds_count{method="POST",route="/api/v1alpha1/lock",status_code="201"}',
      ) >= 3,
    );
    assert.ok(
      delta(
        'tracker_http_request_duration_seconds_count{method="POST",route="/api/v1alpha1/lock",status_code="409"}',
      ) >= 2,
    );
    assert.ok(after.has('process_cpu_user_seconds_total'), 'the default process metrics are there');
    await rest('DELETE', `/lock/${held.id}`);
  });
});

/** `name{labels} value` lines → a map; comments skipped. */
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}
