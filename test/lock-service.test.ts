import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AUTHENTICATION_OFF, type Caller, type Scope } from '../src/core/auth.js';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import type { FeedMessage } from '../src/core/event-feed.js';
import type { LockStore } from '../src/core/lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService, type TestService } from './support/lock-service.js';
import { ManualClock } from './support/manual-clock.js';
import { waitFor } from './support/wait-for.js';

/**
 * The core refuses by default: every read, the snapshot and the watch included, checks its
 * caller's scope and services, as every change does.
 */
const token = (
  name: string,
  scopes: Scope[],
  services: string[] | null = null,
  key = `key-of-${name}`,
): Caller => ({
  kind: 'token',
  name,
  key,
  scopes: new Set(scopes),
  services,
});

const denied = (error: unknown) =>
  error instanceof TrackerError && error.code === ErrorCode.PERMISSION_DENIED;

describe('the lock service checks every caller', () => {
  let store: LockStore;
  let tested: TestService;
  before(async () => {
    store = openSqliteLockStore({ path: ':memory:', clock: new ManualClock() });
    tested = createTestService(store);
    const { service } = tested;
    for (const name of ['deploy-web', 'deploy-api', 'migrate-db']) {
      await service.acquire({ caller: AUTHENTICATION_OFF, service: name, who: 'ci' });
    }
  });
  after(async () => {
    tested.close();
    await store.close();
  });

  test('snapshot: lock:read is needed; a token limited to some services sees only those', async () => {
    const { service } = tested;
    await assert.rejects(service.snapshot({ caller: token('nobody', []) }), denied);
    const all = await service.snapshot({ caller: token('reader', ['lock:read']) });
    assert.deepEqual(all.map((lock) => lock.service).sort(), ['deploy-api', 'deploy-web', 'migrate-db']);
    const some = await service.snapshot({ caller: token('deployer', ['lock:read'], ['deploy-*']) });
    assert.deepEqual(some.map((lock) => lock.service).sort(), ['deploy-api', 'deploy-web']);
    await assert.rejects(
      service.snapshot({ caller: token('deployer', ['lock:read'], ['deploy-*']), service: 'migrate-db' }),
      denied,
    );
    assert.equal((await service.snapshot({ caller: AUTHENTICATION_OFF })).length, 3);
  });

  test('watch: lock:read is needed; a limited token gets only its services in the snapshot', async () => {
    const { service } = tested;
    assert.throws(
      () => service.watch({ caller: token('nobody', []), lastEventIdField: 'x' }, () => {}),
      denied,
    );
    const received: FeedMessage[] = [];
    const stop = await service.watch(
      { caller: token('deployer', ['lock:read'], ['deploy-*']), lastEventIdField: 'Last-Event-ID' },
      (message) => received.push(message),
    );
    try {
      const snapshot = await waitFor(() => received.find((message) => message.kind === 'snapshot'), {
        what: 'the snapshot',
      });
      assert.deepEqual(
        snapshot.kind === 'snapshot' ? snapshot.locks.map((lock) => lock.service).sort() : [],
        ['deploy-api', 'deploy-web'],
      );
    } finally {
      stop();
    }
  });

  test('writes need lock:write, and the services of the token', async () => {
    const { service } = tested;
    await assert.rejects(
      service.acquire({ caller: token('reader', ['lock:read']), service: 'deploy-x', who: 'w' }),
      denied,
    );
    await assert.rejects(
      service.acquire({
        caller: token('deployer', ['lock:write'], ['deploy-*']),
        service: 'migrate-x',
        who: 'w',
      }),
      denied,
    );
    const { lock } = await service.acquire({
      caller: token('deployer', ['lock:write'], ['deploy-*']),
      service: 'deploy-x',
      who: 'w',
    });
    assert.equal(lock.owner, 'deployer');
  });
});

const code = (expected: ErrorCode) => (error: unknown) =>
  error instanceof TrackerError && error.code === expected;

describe('the lock service: ownership by identity, and ids of unseen services', () => {
  let store: LockStore;
  let tested: TestService;
  before(() => {
    store = openSqliteLockStore({ path: ':memory:', clock: new ManualClock() });
    tested = createTestService(store);
  });
  after(async () => {
    tested.close();
    await store.close();
  });

  test("a new token under a revoked one's name neither renews nor releases its locks; an admin does", async () => {
    const { service } = tested;
    const old = token('ci', ['lock:write'], null, 'sha256:old');
    const successor = token('ci', ['lock:write'], null, 'sha256:new');
    const { lock } = await service.acquire({ caller: old, service: 'owned-svc', who: 'job', ttlSeconds: 60 });
    assert.equal(lock.owner, 'ci', 'users see the name');
    await assert.rejects(service.renew({ caller: successor, id: lock.id, ttlSeconds: 31_536_000 }), denied);
    await assert.rejects(service.release({ caller: successor, id: lock.id }), denied);
    assert.equal((await service.renew({ caller: old, id: lock.id })).id, lock.id, 'the taker still renews');
    const admin = token('ops', ['lock:admin'], null, 'sha256:admin');
    assert.equal((await service.release({ caller: admin, id: lock.id })).id, lock.id);
  });

  test('renew and release check the service patterns: a token no longer allowed the service gets 404', async () => {
    const { service } = tested;
    const before = token('deployer', ['lock:write'], ['deploy-*'], 'sha256:deployer');
    const narrowed = token('deployer', ['lock:write'], ['web-*'], 'sha256:deployer');
    const { lock } = await service.acquire({ caller: before, service: 'deploy-narrowed', who: 'job' });
    await assert.rejects(service.renew({ caller: narrowed, id: lock.id }), code(ErrorCode.LOCK_NOT_HELD));
    await assert.rejects(service.release({ caller: narrowed, id: lock.id }), code(ErrorCode.LOCK_NOT_FOUND));
    assert.equal((await service.get({ caller: AUTHENTICATION_OFF, id: lock.id })).id, lock.id, 'still held');
    assert.equal((await service.release({ caller: before, id: lock.id })).id, lock.id);
  });

  test('a lock of a service the token may not see answers exactly as an unknown id', async () => {
    const { service } = tested;
    const { lock } = await service.acquire({ caller: AUTHENTICATION_OFF, service: 'b-svc', who: 'job' });
    const unknown = '00000000-0000-4000-8000-000000000000';
    const reader = token('a-reader', ['lock:read'], ['a-*']);
    const writer = token('a-writer', ['lock:write'], ['a-*']);
    const admin = token('a-admin', ['lock:admin'], ['a-*']);
    for (const id of [lock.id, unknown]) {
      const is = async (promise: Promise<unknown>, expected: ErrorCode) => {
        const error = await promise.then(
          () => assert.fail('refused'),
          (thrown: unknown) => thrown,
        );
        assert.ok(error instanceof TrackerError, String(error));
        assert.deepEqual(
          [error.code, error.message],
          [expected, expected === ErrorCode.LOCK_NOT_HELD ? 'lock not held' : 'lock not found'],
        );
      };
      await is(service.get({ caller: reader, id }), ErrorCode.LOCK_NOT_FOUND);
      await is(service.release({ caller: writer, id }), ErrorCode.LOCK_NOT_FOUND);
      await is(service.renew({ caller: writer, id }), ErrorCode.LOCK_NOT_HELD);
      await is(service.release({ caller: admin, id }), ErrorCode.LOCK_NOT_FOUND);
      await is(service.renew({ caller: admin, id }), ErrorCode.LOCK_NOT_HELD);
      await is(service.forceRelease({ caller: admin, id }), ErrorCode.LOCK_NOT_FOUND);
    }
    // Without the scope at all, the refusal is a 403 whatever the id: it says nothing about the lock.
    await assert.rejects(service.get({ caller: token('none', []), id: lock.id }), denied);
    await assert.rejects(service.forceRelease({ caller: writer, id: lock.id }), denied);
    await assert.rejects(service.release({ caller: reader, id: lock.id }), denied);
    assert.equal((await service.get({ caller: AUTHENTICATION_OFF, id: lock.id })).id, lock.id, 'still held');
  });
});
