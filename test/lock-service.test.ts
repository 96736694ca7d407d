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

describe('the lock service: ownership by identity', () => {
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
});
