/**
 * Several stateless Tracker replicas over one PostgreSQL database, as real processes: one
 * winner per race across replicas, one clock, changes made through one replica reaching
 * watchers of the others, and database trouble answered with 503 while the process stays
 * up and recovers on its own. A TCP proxy of our own sits between the third replica and
 * PostgreSQL, to cut that replica's connections mid-run (the last tests).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import {
  type LockEventMessage,
  type LockServiceClient,
  lockServiceClient,
  serverStream,
  unary,
  type WatchLocksMessage,
} from './support/grpc-client.js';
import { ADMIN_URL, describePostgres, FaultProxy, withClient } from './support/postgres.js';
import { API, call, quickRequest, type Reply } from './support/rest.js';
import { ROOT, runServerToExit, type ServerProcess, startServerProcess } from './support/server-process.js';
import { waitFor, within } from './support/wait-for.js';

const FREE = ['--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'];

const acquire = (base: string, service: string, who = 'tester') =>
  call(base, 'POST', `${API}/lock`, { service, who });

/** One request over `agent` (see quickRequest); the status and the parsed body. */
async function quickCall(
  agent: http.Agent,
  method: string,
  base: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const { status, text } = await quickRequest(agent, method, `${base}${path}`, body);
  return { status, json: text === '' ? {} : JSON.parse(text) };
}

async function databaseNow(url: string): Promise<number> {
  return withClient(url, async (client) => {
    const result = await client.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    return (result.rows[0] as { now: Date }).now.getTime();
  });
}

/** One Server-Sent Events message; `data` parsed as JSON. */
interface SseMessage {
  readonly id: string | undefined;
  readonly event: string;
  readonly data: Record<string, unknown>;
}

/** An event's JSON as the watch route and GET /history send it. */
interface EventJson {
  id: number;
  type: string;
  service: string;
  who: string;
  lock: Record<string, unknown>;
  reason: string | null;
}

/** A text/event-stream read with fetch and a stream reader, message by message. */
interface SseWatch {
  readonly messages: SseMessage[];
  /** Resolves once `done(messages)` holds; rejects, listing what came, when the stream ends first or on timeout. */
  until(done: (messages: readonly SseMessage[]) => boolean, timeoutMs?: number): Promise<SseMessage[]>;
  /** Hangs up. */
  close(): void;
}

/** Opens GET `url` as an event stream; resolves once the response headers arrived (200). */
async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseWatch> {
  const hangUp = new AbortController();
  const response = await fetch(url, {
    headers: { accept: 'text/event-stream', ...headers },
    signal: AbortSignal.any([hangUp.signal, AbortSignal.timeout(120_000)]),
  });
  if (response.status !== 200) assert.fail(`${url}: ${response.status} ${await response.text()}`);
  assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
  const messages: SseMessage[] = [];
  const listeners = new Set<() => void>();
  let ended = false;
  const notify = () => {
    for (const listener of [...listeners]) listener();
  };
  const reader = (response.body as ReadableStream<Uint8Array>)
    .pipeThrough(new TextDecoderStream())
    .getReader();
  void (async () => {
    let buffer = '';
    // Bounded by the stream itself: it ends when we hang up, the server stops or the timeout hits.
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += value;
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id: string | undefined;
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'id') id = text;
          else if (field === 'event') event = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length > 0) messages.push({ id, event, data: JSON.parse(data.join('\n')) });
      }
      notify();
    }
  })()
    .catch(() => {})
    .finally(() => {
      ended = true;
      notify();
    });
  return {
    messages,
    until(done, timeoutMs = 5000) {
      let check = () => {};
      const reached = new Promise<SseMessage[]>((resolve, reject) => {
        check = () => {
          if (done(messages)) resolve([...messages]);
          else if (ended) {
            reject(
              new Error(
                `${url}: the stream ended before the expected messages; got ${JSON.stringify(messages)}`,
              ),
            );
          }
        };
        listeners.add(check);
        check();
      });
      return within(reached, { what: `the expected messages from ${url}`, timeoutMs })
        .catch((error: Error) => {
          throw new Error(`${error.message}; got ${JSON.stringify(messages)}`);
        })
        .finally(() => listeners.delete(check));
    },
    close() {
      hangUp.abort();
    },
  };
}

/** The events (not the snapshot) of an event stream, as their JSON. */
const sseEvents = (messages: readonly SseMessage[]): EventJson[] =>
  messages
    .filter((message) => message.event !== 'snapshot')
    .map((message) => message.data as unknown as EventJson);

/** Every event of a service's history, oldest first (one page holds them all here). */
async function historyOf(base: string, service: string): Promise<EventJson[]> {
  const reply = await call(base, 'GET', `${API}/history?service=${encodeURIComponent(service)}&limit=1000`);
  assert.equal(reply.status, 200, JSON.stringify(reply.json));
  return [...(reply.json.events as EventJson[])].reverse();
}

function assertIncreasing(ids: readonly number[], label: string): void {
  for (let i = 1; i < ids.length; i++) {
    assert.ok(
      (ids[i] as number) > (ids[i - 1] as number),
      `${label}: ids do not increase: ${ids.join(', ')}`,
    );
  }
}

await describePostgres('three replicas on one PostgreSQL database', (database) => {
  /** Trust auth ignores it; it is in C's URL to prove it never reaches the logs. */
  const PASSWORD = 'hunter2-do-not-log';
  /** Between C and PostgreSQL; forwards until the outage tests. */
  let proxy: FaultProxy;
  let replicas: ServerProcess[] = [];
  let a: ServerProcess;
  let b: ServerProcess;
  let c: ServerProcess;
  let clientA: LockServiceClient;
  const hangUps: Array<() => void> = [];
  const agent = new http.Agent({ keepAlive: true });

  before(async () => {
    proxy = await FaultProxy.start(ADMIN_URL);
    const throughProxy = new URL(proxy.url(database().url));
    throughProxy.password = PASSWORD;
    // Started together: they race to migrate the fresh database; the advisory lock lets
    // exactly one apply each migration and the others wait, then start normally.
    replicas = await Promise.all([
      startServerProcess({ args: [...FREE, '--database-url', database().url] }),
      startServerProcess({ args: [...FREE, '--database-url', database().url] }),
      startServerProcess({
        args: [...FREE, '--database-url', throughProxy.href, '--log-level', 'debug'],
      }),
    ]);
    [a, b, c] = replicas as [ServerProcess, ServerProcess, ServerProcess];
    clientA = lockServiceClient(a.grpcAddress);
  });
  after(async () => {
    for (const hangUp of hangUps) hangUp();
    clientA?.close();
    agent.destroy();
    await Promise.all(replicas.map((replica) => replica.stop()));
    await proxy?.close();
  });

  const watchSse = async (base: string, service: string, headers?: Record<string, string>) => {
    const watch = await openSse(`${base}${API}/watch?service=${encodeURIComponent(service)}`, headers);
    hangUps.push(() => watch.close());
    return watch;
  };

  test('all replicas started on a schema migrated exactly once', async () => {
    const versions = await withClient(database().url, async (client) => {
      const result = await client.query<{ version: number }>(
        'SELECT version FROM schema_migrations ORDER BY version',
      );
      return result.rows.map((row) => row.version);
    });
    // Every migration the replicas ship (dist/ is what they run), once each.
    const shipped = readdirSync(join(ROOT, 'dist/src/storage/postgres/migrations'))
      .filter((file) => /^\d+_.*\.sql$/.test(file))
      .map((file) => Number.parseInt(file, 10))
      .sort((x, y) => x - y);
    assert.ok(shipped.length >= 4, `migrations shipped: ${shipped}`);
    assert.deepEqual(versions, shipped);
    assert.deepEqual(
      versions,
      shipped.map((_, i) => i + 1),
    );
  });

  // A store that lets an acquire which met an uncommitted holder win too fails this by its
  // third round (tried: rounds 0 to 2 over eight runs); ten rounds keep a wide margin.
  test('200 concurrent clients over 3 replicas, 10 rounds: exactly one winner each, no 5xx', async () => {
    // Warmed up first, or the first round measures connection setup (a pool that is still
    // connecting makes a burst wait past the connect timeout: 503): the keep-alive
    // connections the clients use, and each replica's pool, by ten store reads at once.
    const perReplica = Math.ceil(200 / replicas.length);
    await waitFor(
      async () => {
        const replies = await Promise.all(
          replicas.flatMap((replica) =>
            Array.from({ length: perReplica }, (_, i) =>
              quickCall(agent, 'GET', replica.baseUrl, i < 10 ? `${API}/locks/list` : '/healthz'),
            ),
          ),
        );
        return replies.every((reply) => reply.status === 200);
      },
      { what: 'every replica to serve ten store reads at once', timeoutMs: 20_000 },
    );
    for (let round = 0; round < 10; round++) {
      const service = `replicated-${round}-${randomUUID().slice(0, 8)}`;
      const replies = await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
          const replica = replicas[i % replicas.length] as ServerProcess;
          return quickCall(agent, 'POST', replica.baseUrl, `${API}/lock`, { service, who: `client-${i}` });
        }),
      );
      const winners = replies.filter((reply) => reply.status === 201);
      const statuses = [...new Set(replies.map((reply) => reply.status))].sort();
      assert.equal(winners.length, 1, `round ${round}: ${winners.length} winners`);
      if (statuses.join() !== '201,409') {
        // Which replica answered what, and what the replicas warned of.
        const others = replies.flatMap((reply, i) =>
          reply.status === 201 || reply.status === 409
            ? []
            : [`replica ${i % replicas.length}: ${reply.status} ${JSON.stringify(reply.json)}`],
        );
        const logged = replicas.flatMap((replica, i) =>
          replica.lines.filter((line) => /"level":[45]0/.test(line)).map((line) => `replica ${i}: ${line}`),
        );
        assert.deepEqual(
          statuses,
          [201, 409],
          `round ${round}: statuses ${statuses}\n${others.slice(0, 5).join('\n')}\n${logged.slice(-10).join('\n')}`,
        );
      }
      const winner = (winners[0] as { json: Record<string, unknown> }).json;
      for (const reply of replies) {
        if (reply.status === 409) assert.deepEqual(reply.json.existingLock, winner);
      }
      // Every replica sees the same single holder.
      for (const replica of replicas) {
        const listed = await call(replica.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
        assert.deepEqual(listed.json.locks, [winner]);
      }
      const released = await call(
        (replicas[round % replicas.length] as ServerProcess).baseUrl,
        'DELETE',
        `${API}/lock/${winner.id}`,
      );
      assert.equal(released.status, 200);
    }
  });

  test('a lock taken through one replica is seen, refused and released through the others', async () => {
    const taken = await acquire(a.baseUrl, 'cross-replica', 'on-a');
    assert.equal(taken.status, 201);
    assert.deepEqual((await call(b.baseUrl, 'GET', `${API}/lock/${taken.json.id}`)).json, taken.json);
    const client = lockServiceClient(c.grpcAddress);
    try {
      await assert.rejects(unary(client, 'CreateLock', { service: 'cross-replica', who: 'on-c' }), {
        code: status.ALREADY_EXISTS,
      });
      assert.deepEqual(await unary(client, 'UnLock', { id: taken.json.id }), {
        success: true,
        message: 'Lock released successfully',
      });
    } finally {
      client.close();
    }
    assert.equal((await call(a.baseUrl, 'GET', `${API}/lock/${taken.json.id}`)).status, 404);
  });

  test('createdAt comes from the database clock, whichever replica answers', async () => {
    for (const replica of replicas) {
      // Whole seconds in the API: compare at that precision.
      const before = Math.floor((await databaseNow(database().url)) / 1000) * 1000;
      const taken = await acquire(replica.baseUrl, `clock-${randomUUID().slice(0, 8)}`);
      const afterwards = await databaseNow(database().url);
      const createdAt = Date.parse(String(taken.json.createdAt));
      assert.ok(
        createdAt >= before && createdAt <= afterwards,
        `${taken.json.createdAt} outside the database's now()`,
      );
    }
  });
  test('a replica refuses to start on a schema newer than itself, with one line', async () => {
    await withClient(database().url, (db) =>
      db.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', now())"),
    );
    try {
      const result = await runServerToExit([...FREE, '--database-url', database().url]);
      assert.equal(result.code, 1);
      assert.equal(result.stderr.trimEnd().split('\n').length, 1, result.stderr);
      assert.match(
        result.stderr,
        /^tracker: database schema is version 99 but this Tracker knows only up to \d+; upgrade Tracker/,
      );
    } finally {
      await withClient(database().url, (db) => db.query('DELETE FROM schema_migrations WHERE version = 99'));
    }
  });

  test('a replica that cannot reach PostgreSQL at start says so in one line and exits 1', async () => {
    const result = await runServerToExit([
      ...FREE,
      '--database-url',
      'postgres://tracker:secret@127.0.0.1:1/db',
    ]);
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /^tracker: cannot reach the database postgres:\/\/tracker:\*\*\*@127\.0\.0\.1:1\/db: .*ECONNREFUSED.*\n$/,
    );
    assert.ok(!result.stderr.includes('secret'));
  });
  test('20 waiters across 2 replicas are granted in arrival order, each hand-off by NOTIFY', async () => {
    const service = `fifo-${randomUUID().slice(0, 8)}`;
    const holder = await acquire(a.baseUrl, service, 'holder');
    assert.equal(holder.status, 201);
    const waiting: Array<Promise<Reply>> = [];
    for (let i = 0; i < 20; i++) {
      // Alternate replicas; join one at a time so that the arrival order is known.
      const replica = i % 2 ? b : a;
      waiting.push(
        call(replica.baseUrl, 'POST', `${API}/lock`, { service, who: `waiter-${i}`, waitSeconds: 60 }),
      );
      await waitFor(
        async () =>
          ((await call(a.baseUrl, 'GET', `${API}/queue/${service}`)).json.waiters as unknown[]).length ===
          i + 1,
        { what: `waiter-${i} in line` },
      );
    }
    const line = await call(b.baseUrl, 'GET', `${API}/queue/${service}`);
    assert.deepEqual(
      (line.json.waiters as Array<{ who: string; position: number }>).map((w) => [w.who, w.position]),
      Array.from({ length: 20 }, (_, i) => [`waiter-${i}`, i + 1]),
    );
    let current = holder.json;
    for (let i = 0; i < 20; i++) {
      // Release through the replica the next waiter is NOT on: the news must cross.
      const releaser = i % 2 ? a : b;
      assert.equal((await call(releaser.baseUrl, 'DELETE', `${API}/lock/${current.id}`)).status, 200);
      const granted = await (waiting[i] as Promise<Reply>);
      assert.equal(granted.status, 201);
      assert.equal(granted.json.who, `waiter-${i}`, 'granted strictly in arrival order');
      assert.ok(Number(granted.json.fencingToken) > Number(current.fencingToken));
      current = granted.json;
    }
    assert.equal((await call(a.baseUrl, 'DELETE', `${API}/lock/${current.id}`)).status, 200);
  });

  test('a waiter whose client hangs up leaves the line on every replica at once', async () => {
    const service = `hangup-${randomUUID().slice(0, 8)}`;
    const holder = await acquire(a.baseUrl, service, 'holder');
    const hangUp = new AbortController();
    const vanished = fetch(`${b.baseUrl}${API}/lock`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service, who: 'vanishing', waitSeconds: 60 }),
      signal: hangUp.signal,
    }).catch(() => null);
    const lineOf = async () =>
      ((await call(a.baseUrl, 'GET', `${API}/queue/${service}`)).json.waiters as Array<{ who: string }>).map(
        (w) => w.who,
      );
    await waitFor(async () => (await lineOf()).length > 0, { what: 'the waiter in line' });
    assert.deepEqual(await lineOf(), ['vanishing']);
    hangUp.abort();
    await vanished;
    await waitFor(async () => (await lineOf()).length === 0, {
      what: 'the hung-up waiter to leave the line',
    });
    await call(a.baseUrl, 'DELETE', `${API}/lock/${holder.json.id}`);
    const listed = await call(a.baseUrl, 'GET', `${API}/locks/list?service=${service}`);
    assert.deepEqual(listed.json.locks, [], 'the vanished waiter was never granted');
  });

  test('an SSE watcher on B gets `acquired` and `released` for a lock taken and released through A', async (t) => {
    const service = `sse-${randomUUID()}`;
    const watch = await watchSse(b.baseUrl, service);
    const [snapshot] = await watch.until((messages) => messages.length >= 1);
    assert.equal(snapshot?.event, 'snapshot');
    assert.deepEqual(snapshot?.data.locks, []);
    assert.equal(snapshot?.id, String(snapshot?.data.eventId));

    const taken = await acquire(a.baseUrl, service, 'on-a');
    assert.equal(taken.status, 201);
    await watch.until((messages) => sseEvents(messages).length >= 1);
    const acquiredMs = performance.now() - taken.at;
    const released = await call(a.baseUrl, 'DELETE', `${API}/lock/${taken.json.id}`);
    assert.equal(released.status, 200);
    await watch.until((messages) => sseEvents(messages).length >= 2);
    const releasedMs = performance.now() - released.at;
    t.diagnostic(
      `A → B latency: acquired ${Math.round(acquiredMs)} ms, released ${Math.round(releasedMs)} ms`,
    );

    const messages = watch.messages.slice(1);
    assert.deepEqual(
      messages.map((message) => message.event),
      ['acquired', 'released'],
    );
    for (const message of messages) {
      assert.equal(message.id, String(message.data.id), 'the SSE id is the event id');
      assert.equal(message.data.type, message.event);
      assert.ok(Number(message.id) > Number(snapshot?.id), 'events come after the snapshot');
    }
    assertIncreasing(
      messages.map((message) => Number(message.id)),
      'SSE',
    );
    const [acquired, gone] = sseEvents(messages);
    // An event's lock is the lock as the API shows it, but for its resource (events carry none).
    const { resource: _resource, ...shown } = taken.json as Record<string, unknown>;
    assert.deepEqual(acquired?.lock, shown);
    assert.equal(gone?.lock.id, taken.json.id);
    assert.equal(gone?.who, 'on-a');
    // The same events as the history, read through A.
    assert.deepEqual(
      (await historyOf(a.baseUrl, service)).map((event) => event.id),
      [acquired?.id, gone?.id],
    );
    watch.close();
  });

  test('a gRPC WatchLocks on A gets a force release made through B', async (t) => {
    const service = `grpc-${randomUUID()}`;
    const taken = await acquire(b.baseUrl, service, 'on-b');
    assert.equal(taken.status, 201);
    const watch = serverStream<WatchLocksMessage>(clientA, 'WatchLocks', { service }, 30_000);
    hangUps.push(() => watch.cancel());
    const [snapshot] = await watch.until((messages) => messages.length >= 1);
    assert.deepEqual(
      snapshot?.snapshot?.locks.map((lock) => lock.id),
      [taken.json.id],
    );
    const forced = await call(b.baseUrl, 'POST', `${API}/lock/${taken.json.id}/force-release`, {
      reason: 'replica test',
    });
    assert.equal(forced.status, 200, JSON.stringify(forced.json));
    const messages = await watch.until((received) => received.length >= 2, 5000);
    t.diagnostic(`B → A latency: force-released ${Math.round(performance.now() - forced.at)} ms`);
    const event = messages[1]?.event as LockEventMessage;
    assert.equal(event.type, 'force-released');
    assert.equal(event.reason, 'replica test');
    assert.equal(event.lock.id, taken.json.id);
    assert.equal(event.who, 'on-b');
    assert.ok(Number(event.id) > Number(snapshot?.snapshot?.eventId));
    watch.cancel();
  });

  test('leases of 1 s with three replicas sweeping: exactly one `expired` event each', async () => {
    const services = Array.from({ length: 10 }, (_, i) => `sweep-${i}-${randomUUID()}`);
    const taken = await Promise.all(
      services.map((service, i) =>
        call((replicas[i % replicas.length] as ServerProcess).baseUrl, 'POST', `${API}/lock`, {
          service,
          who: 'short',
          ttlSeconds: 1,
        }),
      ),
    );
    for (const reply of taken) assert.equal(reply.status, 201);
    // The three sweepers run about every second, each on its own timer.
    await waitFor(
      async () => {
        const histories = await Promise.all(services.map((service) => historyOf(a.baseUrl, service)));
        return histories.every((events) => events.some((event) => event.type === 'expired'));
      },
      { what: 'every lease recorded as expired', timeoutMs: 15_000, intervalMs: 100 },
    );
    // An expiry is recorded when its row is deleted (the history trigger, in the sweep's own
    // transaction): with the rows gone, no sweep, now or later, can record one again. So the
    // histories below are final.
    const left = await withClient(database().url, (client) =>
      client.query('SELECT service FROM locks WHERE service = ANY($1)', [services]),
    );
    assert.deepEqual(left.rows, [], 'every expired lease is deleted');
    for (const [i, service] of services.entries()) {
      for (const replica of replicas) {
        const events = await historyOf(replica.baseUrl, service);
        assert.deepEqual(
          events.map((event) => [event.type, event.lock.id]),
          [
            ['acquired', taken[i]?.json.id],
            ['expired', taken[i]?.json.id],
          ],
          `${service}: one acquire, exactly one expiry`,
        );
      }
    }
  });

  test('a watcher of A that reconnects to B with Last-Event-ID gets exactly the events it missed', async () => {
    const service = `resume-${randomUUID()}`;
    const first = await watchSse(a.baseUrl, service);
    await first.until((messages) => messages.length >= 1);
    const l1 = await acquire(a.baseUrl, service, 'first');
    const [seen] = sseEvents(await first.until((messages) => sseEvents(messages).length >= 1));
    assert.equal(seen?.type, 'acquired');
    const lastEventId = String(seen?.id);
    first.close();

    // Away: four changes, all through B.
    assert.equal((await call(b.baseUrl, 'DELETE', `${API}/lock/${l1.json.id}`)).status, 200);
    const l2 = await call(b.baseUrl, 'POST', `${API}/lock`, { service, who: 'second', ttlSeconds: 30 });
    assert.equal(l2.status, 201);
    const renewed = await call(b.baseUrl, 'POST', `${API}/lock/${l2.json.id}/renew`, { ttlSeconds: 60 });
    assert.equal(renewed.status, 200);
    assert.equal((await call(b.baseUrl, 'DELETE', `${API}/lock/${l2.json.id}`)).status, 200);

    const resumed = await watchSse(b.baseUrl, service, { 'last-event-id': lastEventId });
    const missed = sseEvents(await resumed.until((messages) => sseEvents(messages).length >= 4));
    assert.notEqual(resumed.messages[0]?.event, 'snapshot', 'a resume sends no snapshot');
    assert.deepEqual(
      missed.map((event) => [event.type, event.who]),
      [
        ['released', 'first'],
        ['acquired', 'second'],
        ['renewed', 'second'],
        ['released', 'second'],
      ],
    );
    // No gap, no repeat: exactly the history's events after the last one seen.
    const history = await historyOf(a.baseUrl, service);
    assert.deepEqual(
      missed.map((event) => event.id),
      history.filter((event) => event.id > Number(lastEventId)).map((event) => event.id),
    );

    // Then live: a change through A reaches the resumed watcher on B, and nothing else does:
    // a second change, made after it, arrives right behind it (events come in order, so
    // anything unwanted, a repeat say, would have come before).
    const l3 = await acquire(a.baseUrl, service, 'third');
    assert.equal((await call(a.baseUrl, 'DELETE', `${API}/lock/${l3.json.id}`)).status, 200);
    const live = sseEvents(await resumed.until((messages) => sseEvents(messages).length >= 6));
    assert.equal(resumed.messages.length, 6, JSON.stringify(resumed.messages));
    assert.deepEqual(
      live.slice(4).map((event) => [event.type, event.lock.id]),
      [
        ['acquired', l3.json.id],
        ['released', l3.json.id],
      ],
    );
    assertIncreasing(
      live.map((event) => event.id),
      'resumed SSE',
    );
    resumed.close();
  });

  describe('replica C when PostgreSQL is cut off (A and B are not)', () => {
    let replica: ServerProcess;
    let client: LockServiceClient;
    before(() => {
      replica = c;
      client = lockServiceClient(replica.grpcAddress);
    });
    after(() => client?.close());

    async function assertUnavailable(): Promise<void> {
      // All at once: each must answer within 2 s by itself.
      const [grpcError, health, ready, ...replies] = await Promise.all([
        unary(client, 'CreateLock', { service: 'outage-grpc', who: 'w' }).then(
          () => assert.fail('CreateLock succeeded during the outage'),
          (error: ServiceError) => error,
        ),
        call(replica.baseUrl, 'GET', '/healthz'),
        call(replica.baseUrl, 'GET', '/readyz'),
        acquire(replica.baseUrl, `outage-${randomUUID().slice(0, 8)}`),
        call(replica.baseUrl, 'GET', `${API}/lock/${randomUUID()}`),
        call(replica.baseUrl, 'GET', `${API}/locks/list`),
      ]);
      for (const reply of replies) {
        assert.equal(reply.status, 503);
        assert.deepEqual(reply.json, { error: 'store unavailable', code: 'STORE_UNAVAILABLE' });
        assert.ok(reply.ms < 2000, `answered after ${Math.round(reply.ms)} ms`);
      }
      assert.equal(grpcError.code, status.UNAVAILABLE);
      assert.equal(health.status, 200);
      assert.equal(ready.status, 503);
      assert.ok(ready.ms < 2000, `readyz answered after ${Math.round(ready.ms)} ms`);
    }

    async function assertRecovers(): Promise<void> {
      await waitFor(async () => (await call(replica.baseUrl, 'GET', '/readyz')).status === 200, {
        what: 'readyz to recover without a restart',
        timeoutMs: 15_000,
        intervalMs: 50,
      });
      assert.equal((await acquire(replica.baseUrl, `recovered-${randomUUID().slice(0, 8)}`)).status, 201);
      assert.equal(replica.child.exitCode, null, 'the process stayed up');
    }

    test('connection refused: 503 within 2 s, healthz 200, readyz 503, then serves again by itself', async () => {
      const held = await acquire(replica.baseUrl, 'held-through-outage');
      assert.equal(held.status, 201);
      await proxy.down();
      await assertUnavailable();
      const elsewhere = await acquire(a.baseUrl, `unaffected-${randomUUID().slice(0, 8)}`);
      assert.equal(elsewhere.status, 201, 'A, on connections of its own, serves on');
      await proxy.forward();
      await assertRecovers();
      assert.deepEqual((await call(replica.baseUrl, 'GET', `${API}/lock/${held.json.id}`)).json, held.json);
    });

    test('database silent (connections hang): 503 within 2 s, then serves again by itself', async () => {
      proxy.blackhole();
      await assertUnavailable();
      await proxy.forward();
      await assertRecovers();
    });

    test('a cut mid-load: every 201 is a committed lock, every failure a 503', async (t) => {
      const WORKERS = 16;
      const answered: Array<{ status: number; json: Record<string, unknown> }> = [];
      let phase: 'load' | 'cut' | 'resumed' = 'load';
      /** Workers that sent a request after the cut and were answered 503: their request in flight at the cut was answered. */
      const feltTheCut = new Set<number>();
      /** Workers that sent a request after the database came back and were answered 201. */
      const servedAgain = new Set<number>();
      let stop = false;
      const worker = async (n: number) => {
        for (let i = 0; i < 2000 && !stop; i++) {
          const sentIn = phase;
          const reply = await quickCall(agent, 'POST', replica.baseUrl, `${API}/lock`, {
            service: `midcut-${n}-${i}`,
            who: `worker-${n}`,
          });
          answered.push(reply);
          if (sentIn === 'cut' && reply.status === 503) feltTheCut.add(n);
          if (sentIn === 'resumed' && reply.status === 201) servedAgain.add(n);
        }
      };
      const workers = Promise.all(Array.from({ length: WORKERS }, (_, n) => worker(n)));
      try {
        await waitFor(() => answered.filter((reply) => reply.status === 201).length >= WORKERS, {
          what: 'the load to be served',
        });
        // Cut every connection (and with them the requests in flight), refuse new ones.
        phase = 'cut';
        await proxy.down();
        await waitFor(() => feltTheCut.size === WORKERS, { what: 'every worker to be answered 503' });
        phase = 'resumed';
        await proxy.forward();
        await waitFor(() => servedAgain.size === WORKERS, {
          what: 'every worker to be served again',
          timeoutMs: 15_000,
        });
      } finally {
        stop = true;
        await workers;
      }
      const statuses = new Set(answered.map((reply) => reply.status));
      t.diagnostic(
        `${answered.length} answers: ${answered.filter((reply) => reply.status === 201).length} × 201, ${answered.filter((reply) => reply.status === 503).length} × 503`,
      );
      assert.ok(statuses.has(201));
      assert.ok(statuses.has(503), 'the cut was felt');
      assert.deepEqual(
        [...statuses].filter((code) => code !== 201 && code !== 503),
        [],
      );
      const committed = await withClient(database().url, async (db) => {
        const result = await db.query<{ id: string }>("SELECT id FROM locks WHERE service LIKE 'midcut-%'");
        return new Set(result.rows.map((row) => row.id));
      });
      for (const reply of answered.filter((r) => r.status === 201)) {
        assert.ok(
          committed.has(String(reply.json.id)),
          `lock ${reply.json.id} was answered 201 but is not in the database`,
        );
      }
    });

    test('the database password never reaches the logs', () => {
      assert.ok(replica.lines.length > 10);
      assert.ok(replica.lines.some((line) => line.includes('postgres://postgres:***@')));
      for (const line of replica.lines) assert.ok(!line.includes(PASSWORD), `password logged: ${line}`);
    });
  });
});
