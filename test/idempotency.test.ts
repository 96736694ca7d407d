import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AUTHENTICATION_OFF, type Caller } from '../src/core/auth.js';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import type { LockStore } from '../src/core/lock-store.js';
import { openPostgresLockStore } from '../src/storage/postgres/postgres-lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService, type TestService } from './support/lock-service.js';
import { recordingLogger } from './support/logger.js';
import { ManualClock } from './support/manual-clock.js';
import { describePostgres, installTestClock, type TestClock } from './support/postgres.js';
import { tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/**
 * Idempotent acquires, on both stores, through the service: a retry with the same key and
 * request gets the same lock or the same place in line, never a second one; the same key with
 * another request is refused; a key whose lock ended is never granted again; keys are kept
 * per caller, and pruned only once old and their lock gone.
 */

const caller = AUTHENTICATION_OFF;
const token = (name: string): Caller => ({
  kind: 'token',
  name,
  key: `key-of-${name}`,
  scopes: new Set(['lock:write'] as const),
  services: null,
});

const isCode = (code: ErrorCode) => (error: unknown) => error instanceof TrackerError && error.code === code;

interface Setup {
  readonly store: LockStore;
  /** Moves the store's clock. */
  advance(ms: number): Promise<void>;
  close(): Promise<void>;
}

function idempotencySuite(name: string, open: () => Promise<Setup>): void {
  describe(name, () => {
    let setup: Setup;
    let tested: TestService;
    /** Acquires the store has answered, so that a test can wait for a retry to take its place. */
    let answered = 0;
    before(async () => {
      setup = await open();
      const counted = new Proxy(setup.store, {
        get(target, name) {
          const member: unknown = Reflect.get(target, name);
          if (typeof member !== 'function') return member;
          if (name !== 'acquire') return member.bind(target);
          return async (...args: Parameters<LockStore['acquire']>) => {
            try {
              return await target.acquire(...args);
            } finally {
              answered++;
            }
          };
        },
      });
      tested = createTestService(counted, { recheckMs: 50 });
    });
    after(async () => {
      tested.close();
      await setup.close();
    });
    let n = 0;
    const fresh = (prefix: string) => `${prefix}-${++n}`;

    test('a retry after the grant gets the same lock, marked replayed; no second lock exists', async () => {
      const { service } = tested;
      const key = fresh('key');
      const request = { caller, service: fresh('svc'), who: 'job-1', ttlSeconds: 600, idempotencyKey: key };
      const first = await service.acquire(request);
      assert.equal(first.replayed, false);
      const again = await service.acquire(request);
      assert.equal(again.replayed, true);
      assert.equal(again.lock.id, first.lock.id);
      assert.equal(again.lock.fencingToken, first.lock.fencingToken);
      const page = await service.list({ caller, service: request.service });
      assert.equal(page.total, 1, 'one lock, not two');
      // Without a key, the same request is refused: the service is held.
      await assert.rejects(
        service.acquire({ ...request, idempotencyKey: undefined }),
        isCode(ErrorCode.LOCK_HELD),
      );
    });

    test('the same key with another request is refused (422), whatever differs', async () => {
      const { service } = tested;
      const key = fresh('key');
      const base = { caller, service: fresh('svc'), who: 'job-1', idempotencyKey: key };
      await service.acquire(base);
      for (const changed of [
        { service: fresh('other') },
        { who: 'job-2' },
        { ttlSeconds: 60 },
        { waitSeconds: 5 },
      ]) {
        await assert.rejects(
          service.acquire({ ...base, ...changed }),
          isCode(ErrorCode.IDEMPOTENCY_KEY_REUSED),
        );
      }
    });

    test('once the lock granted under a key ended, the key is never granted again', async () => {
      const { service } = tested;
      const request = { caller, service: fresh('svc'), who: 'job-1', idempotencyKey: fresh('key') };
      const { lock } = await service.acquire(request);
      await service.release({ caller, id: lock.id });
      await assert.rejects(service.acquire(request), (error: unknown) => {
        assert.ok(isCode(ErrorCode.LOCK_ENDED)(error));
        assert.equal((error as TrackerError).details.lockId, lock.id);
        return true;
      });
      // The service is free: another request (another key) takes it.
      const other = await service.acquire({ ...request, idempotencyKey: fresh('key') });
      assert.notEqual(other.lock.id, lock.id);
    });

    test('a refused request left nothing: its retry may take the lock once it is free', async () => {
      const { service } = tested;
      const name = fresh('svc');
      const holder = await service.acquire({ caller, service: name, who: 'holder' });
      const request = { caller, service: name, who: 'job-1', idempotencyKey: fresh('key') };
      await assert.rejects(service.acquire(request), isCode(ErrorCode.LOCK_HELD));
      await assert.rejects(service.acquire(request), isCode(ErrorCode.LOCK_HELD));
      await service.release({ caller, id: holder.lock.id });
      const got = await service.acquire(request);
      assert.equal(got.replayed, false);
      assert.equal((await service.acquire(request)).lock.id, got.lock.id);
    });

    test('a retry while the first request still waits joins the same wait: one row in line, one grant', async () => {
      const { service } = tested;
      const name = fresh('svc');
      const holder = await service.acquire({ caller, service: name, who: 'holder' });
      const request = { caller, service: name, who: 'job-1', waitSeconds: 30, idempotencyKey: fresh('key') };
      const gone = new AbortController();
      const first = service.acquire({ ...request, signal: gone.signal });
      first.catch(() => {});
      await waitFor(async () => (await service.queue({ caller, service: name })).waiters.length === 1, {
        what: 'the first request in line',
      });
      const before = answered;
      const retry = service.acquire(request);
      await waitFor(() => answered > before, { what: 'the retry to take its place in line' });
      // The first request's client is gone (its answer was lost): it goes away; the retry stays.
      gone.abort();
      await assert.rejects(first, isCode(ErrorCode.CANCELLED));
      const queue = await service.queue({ caller, service: name });
      assert.equal(queue.waiters.length, 1, 'still one waiter: the retry took its place');
      await service.release({ caller, id: holder.lock.id });
      const granted = await retry;
      assert.equal(granted.replayed, true);
      assert.equal(granted.lock.who, 'job-1');
      const held = await service.list({ caller, service: name });
      assert.deepEqual(
        held.locks.map((lock) => lock.id),
        [granted.lock.id],
      );
      const events = await service.history({ caller, service: name, limit: 100 });
      assert.equal(events.events.filter((event) => event.type === 'queued').length, 1, 'queued once');
    });

    test('a retry after a wait timed out waits again under the same key', async () => {
      const { service } = tested;
      const name = fresh('svc');
      const holder = await service.acquire({ caller, service: name, who: 'holder' });
      const request = { caller, service: name, who: 'job-1', waitSeconds: 1, idempotencyKey: fresh('key') };
      await assert.rejects(service.acquire(request), isCode(ErrorCode.WAIT_TIMEOUT));
      const retry = service.acquire({ ...request });
      await waitFor(async () => (await service.queue({ caller, service: name })).waiters.length === 1, {
        what: 'the retry in line',
      });
      await service.release({ caller, id: holder.lock.id });
      const granted = await retry;
      assert.equal(granted.lock.who, 'job-1');
    });

    test('keys belong to their caller: the same key from another token is another request', async () => {
      const { service } = tested;
      const key = fresh('key');
      const a = await service.acquire({
        caller: token('ci-a'),
        service: fresh('svc'),
        who: 'a',
        idempotencyKey: key,
      });
      const b = await service.acquire({
        caller: token('ci-b'),
        service: fresh('svc'),
        who: 'b',
        idempotencyKey: key,
      });
      assert.notEqual(a.lock.id, b.lock.id);
      assert.equal(b.replayed, false);
    });

    test('a key that is not printable ASCII of 1 to 255 characters is refused, naming Idempotency-Key', async () => {
      const { service } = tested;
      for (const idempotencyKey of ['', 'x'.repeat(256), 'tab\there', 'é']) {
        await assert.rejects(
          service.acquire({ caller, service: fresh('svc'), who: 'w', idempotencyKey }),
          (error) => {
            assert.ok(isCode(ErrorCode.INVALID_ARGUMENT)(error));
            assert.equal((error as TrackerError).details.field, 'Idempotency-Key');
            return true;
          },
        );
      }
      const long = await service.acquire({
        caller,
        service: fresh('svc'),
        who: 'w',
        idempotencyKey: 'k'.repeat(255),
      });
      assert.equal(long.replayed, false);
    });

    test('keys are pruned once older than the retention and their lock is gone, not before', async () => {
      const { service } = tested;
      const held = { caller, service: fresh('svc'), who: 'w', idempotencyKey: fresh('key') };
      const ended = { caller, service: fresh('svc'), who: 'w', idempotencyKey: fresh('key') };
      await service.acquire(held);
      const { lock } = await service.acquire(ended);
      await service.release({ caller, id: lock.id });
      // Young keys stay.
      assert.equal(await setup.store.pruneIdempotencyKeys(3_600_000, 1000), 0);
      await setup.advance(3_600_001);
      const pruned = await setup.store.pruneIdempotencyKeys(3_600_000, 1000);
      assert.ok(pruned >= 1, `pruned ${pruned}`);
      // The held lock's key survived: a retry still gets it.
      assert.equal((await service.acquire(held)).replayed, true);
      // The ended lock's key is gone: the same request is a new one now.
      assert.equal((await service.acquire(ended)).replayed, false);
    });
  });
}

idempotencySuite('idempotent acquire (SQLite file)', async () => {
  const dir = tempDir();
  const clock = new ManualClock(Date.now());
  const store = openSqliteLockStore({ path: join(dir.path, 'tracker.db'), clock });
  return {
    store,
    advance: async (ms) => clock.advance(ms),
    close: async () => {
      await store.close();
      dir.remove();
    },
  };
});

await describePostgres('idempotent acquire (PostgreSQL)', (database) => {
  idempotencySuite('on a database', async () => {
    const schema = 'idempotency';
    const store = await openPostgresLockStore({
      connectionString: database().url,
      schema,
      logger: recordingLogger().logger,
    });
    const clock: TestClock = await installTestClock(database().url, schema);
    return {
      store,
      advance: (ms) => clock.advance(ms),
      close: async () => {
        await clock.close();
        await store.close();
      },
    };
  });
});
