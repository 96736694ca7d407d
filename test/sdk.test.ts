/**
 * The TypeScript SDK against a real server process, imported by the package's own name
 * (its `exports`), as a user's project would.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  type LockEvent,
  LockHeldError,
  LockLostError,
  LockNotFoundError,
  LockNotHeldError,
  PermissionDeniedError,
  RateLimitedError,
  ServerUnreachableError,
  TrackerApiError,
  TrackerClient,
  UnauthenticatedError,
  WaitTimeoutError,
} from 'tracker-lock';
import { FaultProxy } from './support/fault-proxy.js';
import {
  FREE_ARGS,
  ROOT,
  runToExit,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from './support/server-process.js';
import { makeTlsFiles, type TlsFiles } from './support/tls.js';
import { waitFor, within } from './support/wait-for.js';

const unique = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;

/**
 * Counts this process's TCP connections to 127.0.0.1:`port` that were refused (through the
 * `net.client.socket` diagnostics channel, which sees every client socket Node opens).
 */
function countRefusals(port: number): { readonly count: number; stop(): void } {
  let count = 0;
  const onSocket = (message: unknown) => {
    const { socket } = message as { socket: Socket };
    socket.once('error', (error: NodeJS.ErrnoException & { port?: number }) => {
      if (error.code === 'ECONNREFUSED' && error.port === port) count++;
    });
  };
  subscribe('net.client.socket', onSocket);
  return {
    get count() {
      return count;
    },
    stop: () => unsubscribe('net.client.socket', onSocket),
  };
}

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
    await waitFor(async () => (await client.queue(service)).waiters.length === 1, {
      what: 'the waiter in the queue',
    });
    await client.release(holder.id);
    const granted = await within(waiting, { what: 'the wait granted' });
    assert.equal(granted.who, 'waiter');
    await client.release(granted.id);
  });

  test('an aborted wait leaves the queue', async () => {
    const service = unique('abort');
    const holder = await client.acquire(service);
    const abort = new AbortController();
    const waiting = client.acquire(service, { who: 'aborted', wait: 30, signal: abort.signal });
    const queued = await waitFor(
      async () => {
        const { waiters } = await client.queue(service);
        return waiters.length > 0 && waiters;
      },
      { what: 'the waiter in the queue' },
    );
    assert.deepEqual(
      queued.map((waiter) => waiter.who),
      ['aborted'],
    );
    abort.abort();
    await assert.rejects(within(waiting, { what: 'the aborted acquire' }), { name: 'AbortError' });
    await waitFor(async () => (await client.queue(service)).waiters.length === 0, {
      what: 'the queue empty once the client hung up',
    });
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
        // Past the 1 s TTL by the server's own clock, so that only renewals can have kept it:
        // wait until the history shows a renewal recorded a second or more after the grant.
        await waitFor(
          async () => {
            const { events } = await client.history({ service, limit: 50 });
            const mine = events.filter((event) => event.lock.id === lock.id);
            const granted = mine.find((event) => event.type === 'acquired');
            assert.ok(granted, 'the grant is in the history');
            assert.deepEqual(
              mine.filter((event) => event.type !== 'acquired' && event.type !== 'renewed'),
              [],
              'nothing but renewals since the grant',
            );
            return mine.find(
              (event) => event.type === 'renewed' && Date.parse(event.at) >= Date.parse(granted.at) + 1000,
            );
          },
          { what: 'a renewal recorded at least 1 s (the TTL) after the grant', intervalMs: 100 },
        );
        assert.equal(signal.aborted, false);
        const held = await client.get(lock.id);
        assert.equal(held.id, lock.id, 'still held past its first lease');
        assert.ok(
          Date.parse(held.expiresAt ?? '') > Date.parse(lock.expiresAt ?? ''),
          `the lease was extended (${lock.expiresAt}, now ${held.expiresAt})`,
        );
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
        await within(new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true })), {
          what: 'the signal aborted once a renewal is refused',
        });
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
    // An event's lock has every field of the lock but `resource`.
    const { resource: _resource, ...held } = lock;
    assert.deepEqual(forced.lock, { ...held, waiters: 0 });
    assert.match(forced.at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  test('forceRelease grants the service to the next waiter', async () => {
    const service = unique('force-grant');
    const holder = await client.acquire(service, { who: 'holder' });
    const waiting = client.acquire(service, { who: 'waiter', wait: 30 });
    await waitFor(async () => (await client.queue(service)).waiters.length === 1, {
      what: 'the waiter in the queue',
    });
    await client.forceRelease(holder.id, { reason: 'make way' });
    const granted = await within(waiting, { what: 'the wait granted' });
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
    // The server "comes up late": a port that refuses connections until a proxy to the server
    // starts listening on it.
    const proxy = await FaultProxy.start(server.baseUrl);
    await proxy.down();
    const refusals = countRefusals(proxy.port);
    try {
      const patient = new TrackerClient({
        url: `http://127.0.0.1:${proxy.port}`,
        retries: 8,
        retryDelayMs: 50,
      });
      const acquiring = patient.acquire(unique('late-server'), { who: 'early' });
      acquiring.catch(() => {}); // awaited below; a failure of the wait first must not go unhandled
      await waitFor(() => refusals.count >= 2, { what: 'the first attempt and a retry refused' });
      await proxy.forward();
      const lock = await within(acquiring, { what: 'the acquire once the port listens' });
      assert.equal(lock.who, 'early');
      assert.equal((await client.get(lock.id)).who, 'early', 'acquired on the server');
      await client.release(lock.id);
    } finally {
      refusals.stop();
      await proxy.close();
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

/** The variables the SDK reads: cleared for the tests below, restored after. */
const SDK_ENV = ['TRACKER_TOKEN', 'TRACKER_CA_FILE', 'TRACKER_CLIENT_CERT_FILE', 'TRACKER_CLIENT_KEY_FILE'];

function withoutSdkEnv(): () => void {
  const saved = SDK_ENV.map((name) => [name, process.env[name]] as const);
  for (const name of SDK_ENV) delete process.env[name];
  return () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}

/** A token made with `tracker token create`, as an operator would. */
async function createToken(file: string, name: string, scopes: string, services?: string): Promise<string> {
  const args = ['token', 'create', '--name', name, '--scopes', scopes, '--file', file];
  if (services !== undefined) args.push('--services', services);
  const created = await runToExit(process.execPath, [join(ROOT, 'dist/src/cli/main.js'), ...args]);
  assert.equal(created.code, 0, created.stderr);
  return created.stdout.trim();
}

describe('TrackerClient with authentication', () => {
  let dir: ReturnType<typeof tempDir>;
  let server: ServerProcess;
  let restoreEnv: () => void;
  const tokens = { admin: '', writer: '', reader: '', deployer: '' };
  const as = (token: string) => new TrackerClient({ url: server.baseUrl, token });

  before(async () => {
    restoreEnv = withoutSdkEnv();
    dir = tempDir();
    const file = join(dir.path, 'tokens.json');
    tokens.admin = await createToken(file, 'admin', 'lock:admin');
    tokens.writer = await createToken(file, 'writer', 'lock:write');
    tokens.reader = await createToken(file, 'reader', 'lock:read');
    tokens.deployer = await createToken(file, 'deployer', 'lock:write', 'deploy-*');
    server = await startServerProcess({ args: [...FREE_ARGS, '--auth-tokens-file', file] });
  });
  after(async () => {
    await server?.stop();
    dir?.remove();
    restoreEnv?.();
  });

  test('the token comes from TRACKER_TOKEN by default; locks record its name as owner', async () => {
    process.env.TRACKER_TOKEN = tokens.writer;
    let client: TrackerClient;
    try {
      client = new TrackerClient({ url: server.baseUrl });
    } finally {
      delete process.env.TRACKER_TOKEN;
    }
    const service = unique('sdk-auth');
    const lock = await client.acquire(service, { who: 'ci-7', ttl: '1m' });
    assert.deepEqual([lock.who, lock.owner], ['ci-7', 'writer']);
    assert.equal((await as(tokens.reader).get(lock.id)).owner, 'writer');
    assert.equal((await client.renew(lock.id)).owner, 'writer');
    await client.release(lock.id);
    await assert.rejects(client.get(lock.id), LockNotFoundError);
    assert.equal(await client.withLock(service, async (held) => held.owner), 'writer');
  });

  test('no token, or an unknown one, is UnauthenticatedError (401)', async () => {
    for (const client of [
      new TrackerClient({ url: server.baseUrl }),
      new TrackerClient({ url: server.baseUrl, token: 'trk_unknown' }),
      new TrackerClient({ url: server.baseUrl, token: null }),
    ]) {
      const error = await client.list().catch((caught: unknown) => caught);
      assert.ok(error instanceof UnauthenticatedError, String(error));
      assert.ok(error instanceof TrackerApiError);
      assert.deepEqual([error.status, error.code], [401, 'UNAUTHENTICATED']);
      assert.equal(error.message, 'a valid bearer token is required');
    }
    assert.throws(() => new TrackerClient({ url: server.baseUrl, token: 'two words' }), TypeError);
  });

  test('a read token cannot acquire; a deploy-* token cannot take other services (PermissionDeniedError)', async () => {
    const reader = as(tokens.reader);
    assert.ok(Array.isArray((await reader.list()).locks), 'reading is allowed');
    const denied = await reader.acquire(unique('sdk-read')).catch((caught: unknown) => caught);
    assert.ok(denied instanceof PermissionDeniedError);
    assert.deepEqual([denied.status, denied.code], [403, 'PERMISSION_DENIED']);
    assert.match(denied.message, /lock:write/);

    const deployer = as(tokens.deployer);
    const mine = await deployer.acquire(unique('deploy-sdk'));
    assert.equal(mine.owner, 'deployer');
    await assert.rejects(deployer.acquire(unique('other')), PermissionDeniedError);
    await deployer.release(mine.id);
  });

  test("another token's release is refused (403); an admin token may release it", async () => {
    const lock = await as(tokens.writer).acquire(unique('deploy-shared'));
    await assert.rejects(as(tokens.deployer).release(lock.id), PermissionDeniedError);
    assert.equal((await as(tokens.writer).get(lock.id)).id, lock.id, 'still held');
    await as(tokens.admin).release(lock.id);
    await assert.rejects(as(tokens.writer).get(lock.id), LockNotFoundError);
  });
});

describe('TrackerClient retries: never on 401 or 403; on 429 after Retry-After within the retries', () => {
  /** A fake Tracker answering each request with the next of `answers` ('ok', and once they run out: 200). */
  async function fake(answers: Array<{ status: number; code: string; retryAfter?: string } | 'ok'>) {
    const seen: Array<{ at: number; authorization: string | undefined }> = [];
    const http = createHttpServer((request, response) => {
      seen.push({ at: Date.now(), authorization: request.headers.authorization });
      request.resume();
      const answer = answers.shift();
      if (answer === undefined || answer === 'ok') {
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"locks":[]}');
        return;
      }
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (answer.retryAfter !== undefined) headers['retry-after'] = answer.retryAfter;
      response.writeHead(answer.status, headers).end(JSON.stringify({ error: 'no', code: answer.code }));
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const address = http.address();
    assert.ok(address && typeof address === 'object');
    return {
      url: `http://127.0.0.1:${address.port}`,
      seen,
      close: () => new Promise<void>((resolve) => http.close(() => resolve())),
    };
  }

  test('401 and 403 are thrown at once', async () => {
    const server = await fake([
      { status: 401, code: 'UNAUTHENTICATED' },
      { status: 403, code: 'PERMISSION_DENIED' },
    ]);
    try {
      const client = new TrackerClient({ url: server.url, token: 'trk_x', retries: 5, retryDelayMs: 1 });
      await assert.rejects(client.list(), UnauthenticatedError);
      await assert.rejects(client.release('id'), PermissionDeniedError);
      assert.equal(server.seen.length, 2, 'one request each');
      assert.ok(server.seen.every((request) => request.authorization === 'Bearer trk_x'));
    } finally {
      await server.close();
    }
  });

  test('429 waits Retry-After, then retries; a long Retry-After or no retries left throws RateLimitedError', async () => {
    const server = await fake([
      { status: 429, code: 'RATE_LIMITED', retryAfter: '1' },
      'ok',
      { status: 429, code: 'RATE_LIMITED', retryAfter: '3600' },
      // Retry-After: 0 (retry at once), so that spending the retries costs no time.
      ...Array.from({ length: 4 }, () => ({ status: 429, code: 'RATE_LIMITED', retryAfter: '0' })),
      { status: 429, code: 'RATE_LIMITED', retryAfter: '1' },
    ]);
    try {
      const client = new TrackerClient({ url: server.url, retries: 3, retryDelayMs: 1 });
      assert.deepEqual((await client.list()).locks, []);
      assert.equal(server.seen.length, 2);
      const waited = (server.seen[1]?.at ?? 0) - (server.seen[0]?.at ?? 0);
      assert.ok(waited >= 990, `waited the Retry-After (${waited} ms)`);

      const long = await client.list().catch((caught: unknown) => caught);
      assert.ok(long instanceof RateLimitedError);
      assert.deepEqual([long.status, long.code, long.retryAfterSeconds], [429, 'RATE_LIMITED', 3600]);
      assert.equal(server.seen.length, 3, 'an hour is not waited for');

      // Each 429 spends one of the retries: three are waited for, the fourth is thrown.
      const tried = await client.list().catch((caught: unknown) => caught);
      assert.ok(tried instanceof RateLimitedError && tried.retryAfterSeconds === 0);
      assert.equal(server.seen.length, 7);

      const none = new TrackerClient({ url: server.url, retries: 0 });
      const error = await none.list().catch((caught: unknown) => caught);
      assert.ok(error instanceof RateLimitedError && error.retryAfterSeconds === 1);
      assert.equal(server.seen.length, 8, 'no retry left: thrown at once');
    } finally {
      await server.close();
    }
  });

  test('against a real rate limit, a second call waits its turn', async () => {
    const server = await startServerProcess({
      args: [...FREE_ARGS, '--rate-limit', '1/s', '--rate-limit-burst', '1'],
    });
    try {
      const patient = new TrackerClient({ url: server.baseUrl, token: null });
      const hasty = new TrackerClient({ url: server.baseUrl, token: null, retries: 0 });
      await patient.list();
      const refused = await hasty.list().catch((caught: unknown) => caught);
      assert.ok(refused instanceof RateLimitedError, String(refused));
      assert.equal(refused.retryAfterSeconds, 1);
      assert.deepEqual((await patient.list()).locks, [], 'retried after Retry-After');
    } finally {
      await server.stop();
    }
  });
});

describe('TrackerClient over TLS', () => {
  let tls: TlsFiles;
  let server: ServerProcess;
  let mutual: ServerProcess;
  let restoreEnv: () => void;
  const httpsUrl = (target: ServerProcess) => `https://127.0.0.1:${target.httpPort}`;

  before(async () => {
    restoreEnv = withoutSdkEnv();
    tls = makeTlsFiles();
    const serving = ['--tls-cert', tls.serverCert, '--tls-key', tls.serverKey];
    [server, mutual] = await Promise.all([
      startServerProcess({ args: [...FREE_ARGS, ...serving] }),
      startServerProcess({ args: [...FREE_ARGS, ...serving, '--tls-ca', tls.ca] }),
    ]);
  });
  after(async () => {
    await server?.stop();
    await mutual?.stop();
    tls?.remove();
    restoreEnv?.();
  });

  test('caFile, ca or TRACKER_CA_FILE: a round trip over https://', async () => {
    const url = httpsUrl(server);
    const client = new TrackerClient({ url, caFile: tls.ca });
    const lock = await client.acquire(unique('tls'), { who: 'over-tls' });
    assert.equal(lock.owner, null, 'no authentication on this server');
    const byPem = new TrackerClient({
      url: `https://localhost:${server.httpPort}`,
      ca: readFileSync(tls.ca, 'utf8'),
    });
    assert.equal((await byPem.get(lock.id)).who, 'over-tls');
    process.env.TRACKER_CA_FILE = tls.ca;
    try {
      await new TrackerClient({ url }).release(lock.id);
    } finally {
      delete process.env.TRACKER_CA_FILE;
    }
    await assert.rejects(client.get(lock.id), LockNotFoundError);
  });

  test('without the CA the connection is refused with a clear error', async () => {
    const error = await new TrackerClient({ url: httpsUrl(server) })
      .list()
      .catch((caught: unknown) => caught);
    assert.ok(error instanceof ServerUnreachableError);
    assert.match(
      error.message,
      /^cannot reach Tracker at https:\/\/127\.0\.0\.1:\d+: the server's TLS certificate is not trusted \([A-Z_]+\): give the CA certificate that signed it \(TRACKER_CA_FILE\)$/,
    );
    // Plain HTTP to the TLS port, and TLS to a plain port, say what is wrong too.
    const plain = await new TrackerClient({ url: `http://127.0.0.1:${server.httpPort}`, retries: 0 })
      .list()
      .catch((caught: unknown) => caught);
    assert.ok(plain instanceof ServerUnreachableError);
    assert.match(plain.message, /https:\/\//);
  });

  test('mutual TLS: a client certificate signed by the CA is accepted; none is refused', async () => {
    const url = httpsUrl(mutual);
    const withFiles = new TrackerClient({
      url,
      caFile: tls.ca,
      certFile: tls.clientCert,
      keyFile: tls.clientKey,
    });
    const lock = await withFiles.acquire(unique('mtls'));
    const withPem = new TrackerClient({
      url,
      ca: readFileSync(tls.ca),
      cert: readFileSync(tls.clientCert, 'utf8'),
      key: readFileSync(tls.clientKey),
    });
    await withPem.release(lock.id);

    const without = await new TrackerClient({ url, caFile: tls.ca })
      .list()
      .catch((caught: unknown) => caught);
    assert.ok(without instanceof ServerUnreachableError);
    assert.match(without.message, /client certificate/);
  });

  test('bad TLS options throw at construction', () => {
    assert.throws(() => new TrackerClient({ url: 'http://127.0.0.1:8080', caFile: tls.ca }), TypeError);
    assert.throws(
      () => new TrackerClient({ url: httpsUrl(mutual), caFile: tls.ca, certFile: tls.clientCert }),
      /go together/,
    );
    assert.throws(
      () => new TrackerClient({ url: httpsUrl(server), caFile: join(tls.dir, 'missing.pem') }),
      /^Error: cannot read the CA file .*missing\.pem \(ENOENT\)$/,
    );
  });
});
