/**
 * The TypeScript SDK against a real server process, imported by the package's own name
 * (its `exports`), as a user's project would.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  LockHeldError,
  LockLostError,
  LockNotFoundError,
  LockNotHeldError,
  ServerUnreachableError,
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
