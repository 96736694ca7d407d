/**
 * The TypeScript SDK against a real server process, imported by the package's own name
 * (its `exports`), as a user's project would.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  type LockEvent,
  LockHeldError,
  LockLostError,
  LockNotFoundError,
  LockNotHeldError,
  ServerUnreachableError,
  TrackerApiError,
  TrackerClient,
  WaitTimeoutError,
} from 'tracker-lock';
import { type ServerProcess, startServerProcess, tempDir } from './support/server-process.js';

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      assert.ok(address && typeof address === 'object');
      server.close(() => resolve(address.port));
    });
  });
}

describe('TrackerClient', () => {
  let server: ServerProcess;
  let dir: ReturnType<typeof tempDir>;
  let client: TrackerClient;

  before(async () => {
    dir = tempDir();
    server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${dir.path}/sdk.db`],
    });
    client = new TrackerClient({ url: server.baseUrl });
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
  });

  test('acquire, get, renew, list, queue and release round-trip typed locks', async () => {
    const service = unique('sdk');
    const lock = await client.acquire(service, { who: 'sdk-test', ttl: '90s' });
    assert.equal(lock.service, service);
    assert.equal(lock.who, 'sdk-test');
    assert.equal(lock.ttlSeconds, 90);
    assert.deepEqual(await client.get(lock.id), lock);
    const renewed = await client.renew(lock.id, { ttl: '1h30m' });
    assert.equal(renewed.ttlSeconds, 5400);
    const listed = await client.list({ service });
    assert.deepEqual(
      listed.locks.map((l) => l.id),
      [lock.id],
    );
    assert.equal((await client.queue(service)).holder?.id, lock.id);
    await client.release(lock.id);
    await assert.rejects(client.get(lock.id), LockNotFoundError);
    await assert.rejects(client.renew(lock.id), LockNotHeldError);
    await assert.rejects(client.release(lock.id), LockNotFoundError);
  });

  test('who defaults to user@hostname', async () => {
    const lock = await client.acquire(unique('default-who'));
    assert.match(lock.who, /^.+@.+$/);
    await client.release(lock.id);
  });

  test('typed errors carry the holder: LockHeldError at once, WaitTimeoutError after the wait', async () => {
    const service = unique('held');
    const holder = await client.acquire(service, { who: 'holder' });
    const held = await client.acquire(service, { who: 'other' }).catch((error: unknown) => error);
    assert.ok(held instanceof LockHeldError);
    assert.equal(held.code, 'LOCK_HELD');
    assert.equal(held.existingLock.id, holder.id);
    const timedOut = await client
      .acquire(service, { who: 'patient', wait: '1s' })
      .catch((error: unknown) => error);
    assert.ok(timedOut instanceof WaitTimeoutError);
    assert.equal(timedOut.existingLock.id, holder.id);
    await client.release(holder.id);
  });

  test('a wait is granted when the holder releases', async () => {
    const service = unique('wait');
    const holder = await client.acquire(service, { who: 'holder' });
    const waiting = client.acquire(service, { who: 'waiter', wait: 30 });
    await delay(200);
    await client.release(holder.id);
    const granted = await waiting;
    assert.equal(granted.who, 'waiter');
    await client.release(granted.id);
  });

  test('an aborted wait leaves the queue', async () => {
    const service = unique('abort');
    const holder = await client.acquire(service);
    const abort = new AbortController();
    const waiting = client.acquire(service, { who: 'aborted', wait: 30, signal: abort.signal });
    await delay(200);
    assert.equal((await client.queue(service)).waiters.length, 1);
    abort.abort();
    await assert.rejects(waiting, { name: 'AbortError' });
    for (let i = 0; i < 100 && (await client.queue(service)).waiters.length > 0; i++) await delay(10);
    assert.deepEqual((await client.queue(service)).waiters, []);
    await client.release(holder.id);
  });

  test('a bad duration is refused before any request', async () => {
    assert.throws(() => client.acquire(unique('bad'), { ttl: '5 minutes' }), TypeError);
  });

  test('withLock renews while the function runs and releases afterwards, even when it throws', async () => {
    const service = unique('with-lock');
    const result = await client.withLock(
      service,
      async (lock, signal) => {
        await delay(1600); // past the 1 s TTL: only renewals keep it
        assert.equal(signal.aborted, false);
        assert.equal((await client.get(lock.id)).id, lock.id);
        return 'done';
      },
      { who: 'worker', ttl: 1 },
    );
    assert.equal(result, 'done');
    assert.deepEqual((await client.list({ service })).locks, []);
    await assert.rejects(
      client.withLock(service, async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.deepEqual((await client.list({ service })).locks, [], 'released after the throw');
  });

  test('withLock aborts the signal the moment the lock is lost', async () => {
    const service = unique('lost');
    const reason = await client.withLock(
      service,
      async (lock, signal) => {
        await client.release(lock.id); // someone releases it from outside
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        return signal.reason;
      },
      { ttl: 1 },
    );
    assert.ok(reason instanceof LockLostError);
  });

  test('forceRelease returns the released lock and records the reason; 404 is LockNotFoundError', async () => {
    const service = unique('force');
    const lock = await client.acquire(service, { who: 'stuck', ttl: '1h' });
    const released = await client.forceRelease(lock.id, { reason: 'runner died' });
    assert.deepEqual(released, lock);
    await assert.rejects(client.get(lock.id), LockNotFoundError);
    await assert.rejects(client.forceRelease(lock.id), LockNotFoundError, 'a second time');
    await assert.rejects(client.forceRelease(randomUUID(), { reason: 'x' }), LockNotFoundError);
    await assert.rejects(client.release(lock.id), LockNotFoundError, 'the holder finds it gone');

    const again = await client.acquire(service, { who: 'next' });
    assert.deepEqual(await client.forceRelease(again.id), again, 'without a reason');

    const { events, nextBefore } = await client.history({ service });
    assert.equal(nextBefore, null);
    assert.deepEqual(
      events.map((event) => [event.type, event.who, event.lock.id, event.reason]),
      [
        ['force-released', 'next', again.id, null],
        ['acquired', 'next', again.id, null],
        ['force-released', 'stuck', lock.id, 'runner died'],
        ['acquired', 'stuck', lock.id, null],
      ],
    );
    const forced = events[2] as LockEvent;
    assert.equal(typeof forced.heldSeconds, 'number');
    assert.ok((forced.heldSeconds ?? -1) >= 0);
    assert.deepEqual(forced.lock, { ...lock, waiters: 0 });
    assert.match(forced.at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  test('forceRelease grants the service to the next waiter', async () => {
    const service = unique('force-grant');
    const holder = await client.acquire(service, { who: 'holder' });
    const waiting = client.acquire(service, { who: 'waiter', wait: 30 });
    for (let i = 0; i < 250 && (await client.queue(service)).waiters.length === 0; i++) await delay(10);
    await client.forceRelease(holder.id, { reason: 'make way' });
    const granted = await waiting;
    assert.equal(granted.who, 'waiter');
    assert.equal(granted.fencingToken, holder.fencingToken + 1);
    const types = (await client.history({ service, limit: 3 })).events.map((event) => event.type);
    assert.deepEqual(types, ['acquired', 'dequeued', 'force-released']);
    await client.release(granted.id);
  });

  test('a bad force-release reason or history filter is a typed 400 naming the field', async () => {
    const lock = await client.acquire(unique('bad-input'));
    const badReason = await client
      .forceRelease(lock.id, { reason: 'two\nlines' })
      .catch((error: unknown) => error);
    assert.ok(badReason instanceof TrackerApiError);
    assert.deepEqual(
      [badReason.status, badReason.code, badReason.field],
      [400, 'INVALID_ARGUMENT', 'reason'],
    );
    const long = await client.forceRelease(lock.id, { reason: 'x'.repeat(1025) }).catch((e: unknown) => e);
    assert.ok(long instanceof TrackerApiError && long.field === 'reason');
    assert.equal((await client.get(lock.id)).id, lock.id, 'still held');
    for (const [options, field] of [
      [{ since: 'yesterday' }, 'since'],
      [{ until: '2026-11-26 17:00:00' }, 'until'],
      [{ limit: 0 }, 'limit'],
      [{ limit: 1001 }, 'limit'],
      [{ before: -1 }, 'before'],
    ] as const) {
      const error = await client.history(options).catch((caught: unknown) => caught);
      assert.ok(error instanceof TrackerApiError, field);
      assert.deepEqual([error.status, error.code, error.field], [400, 'INVALID_ARGUMENT', field]);
    }
    assert.throws(() => client.history({ since: new Date(Number.NaN) }), TypeError);
    await client.release(lock.id);
  });

  test('history filters by service and who, splits at since/until, and pages with nextBefore', async () => {
    const service = unique('history');
    const other = unique('history-other');
    for (const who of ['ann', 'ben', 'ann']) {
      const lock = await client.acquire(service, { who, ttl: 60 });
      await client.renew(lock.id);
      await client.release(lock.id);
    }
    const elsewhere = await client.acquire(other, { who: 'ann' });
    await client.release(elsewhere.id);

    const { events } = await client.history({ service });
    assert.equal(events.length, 9);
    assert.ok(events.every((event) => event.service === service));
    assert.deepEqual(
      events.slice(0, 3).map((event) => event.type),
      ['released', 'renewed', 'acquired'],
    );
    assert.ok(
      events.every((event, i) => i === 0 || (events[i - 1]?.id ?? 0) > event.id),
      'newest first',
    );
    const released = events.filter((event) => event.type === 'released');
    assert.ok(released.every((event) => typeof event.heldSeconds === 'number'));
    assert.ok(events.filter((e) => e.type !== 'released').every((event) => event.heldSeconds === null));

    const anns = (await client.history({ service, who: 'ann' })).events;
    assert.equal(anns.length, 6);
    assert.ok(anns.every((event) => event.who === 'ann'));
    const annEverywhere = (await client.history({ who: 'ann', limit: 1000 })).events;
    assert.ok(annEverywhere.some((event) => event.service === other));

    // since is inclusive, until exclusive: split at one event's time (a string, then a Date),
    // the halves are the whole history without overlap.
    for (const pivot of [events[4]?.at ?? '', new Date(events[4]?.at ?? '')]) {
      const newer = (await client.history({ service, since: pivot })).events.map((event) => event.id);
      const older = (await client.history({ service, until: pivot })).events.map((event) => event.id);
      assert.ok(newer.includes(events[4]?.id ?? -1));
      assert.deepEqual(
        [...newer, ...older],
        events.map((event) => event.id),
      );
    }
    assert.deepEqual((await client.history({ service, since: new Date(Date.now() + 60_000) })).events, []);

    // Pages of 4: 4, 4, 1; the last page says there is no next.
    const pages: number[][] = [];
    let before: number | undefined;
    for (let i = 0; i < 10; i++) {
      const page = await client.history({ service, limit: 4, before });
      pages.push(page.events.map((event) => event.id));
      if (page.nextBefore === null) break;
      assert.equal(page.nextBefore, page.events.at(-1)?.id);
      before = page.nextBefore;
    }
    assert.deepEqual(
      pages.map((page) => page.length),
      [4, 4, 1],
    );
    assert.deepEqual(
      pages.flat(),
      events.map((event) => event.id),
    );
  });

  test('refused connections are retried with backoff until the server is up', async () => {
    const port = await freePort();
    const patient = new TrackerClient({ url: `http://127.0.0.1:${port}`, retries: 8, retryDelayMs: 100 });
    const acquiring = patient.acquire(unique('late-server'), { who: 'early' });
    await delay(300);
    const late = await startServerProcess({
      args: ['--http-port', String(port), '--grpc-port', '0', '--database-url', 'sqlite::memory:'],
    });
    try {
      assert.equal((await acquiring).who, 'early');
    } finally {
      await late.stop();
    }
  });

  test('a server that stays down is ServerUnreachableError', async () => {
    const port = await freePort();
    const nobody = new TrackerClient({ url: `http://127.0.0.1:${port}`, retries: 1, retryDelayMs: 10 });
    const error = await nobody.list().catch((caught: unknown) => caught);
    assert.ok(error instanceof ServerUnreachableError);
    assert.match(error.message, /cannot reach Tracker at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
  });
});
