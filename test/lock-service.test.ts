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
      () => service.watch({ caller: token('nobody', []), lastEventIdField: 'x', onEnd: () => {} }, () => {}),
      denied,
    );
    const received: FeedMessage[] = [];
    const stop = await service.watch(
      {
        caller: token('deployer', ['lock:read'], ['deploy-*']),
        lastEventIdField: 'Last-Event-ID',
        onEnd: () => {},
      },
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

describe('the lock service: a reload of the tokens ends what revoked or narrowed tokens started', () => {
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

  /** The tokens file after a reload: the principals it holds, by identity. */
  const reloaded = (...principals: Caller[]) => {
    const byKey = new Map(
      principals.flatMap((principal) =>
        principal.kind === 'token' ? [[principal.key, principal] as const] : [],
      ),
    );
    return tested.service.revalidate((caller) => byKey.get(caller.key) ?? null);
  };
  /** A watch whose end is recorded. */
  const watching = async (caller: Caller, service?: string) => {
    const ends: TrackerError[] = [];
    const messages: FeedMessage[] = [];
    const stop = await tested.service.watch(
      { caller, service, lastEventIdField: 'Last-Event-ID', onEnd: (reason) => ends.push(reason) },
      (message) => messages.push(message),
    );
    return { ends, messages, stop };
  };

  test('revoked: watches end UNAUTHENTICATED, a waiting acquire answers UNAUTHENTICATED and leaves the queue', async () => {
    const { service } = tested;
    const revoked = token('ci', ['lock:write'], null, 'sha256:revoked');
    const kept = token('other', ['lock:write'], null, 'sha256:kept');
    const all = await watching(revoked);
    const one = await watching(revoked, 'waited-svc');
    const unrelated = await watching(kept);
    const holder = await service.acquire({ caller: kept, service: 'waited-svc', who: 'holder' });
    const waiting = service.acquire({
      caller: revoked,
      service: 'waited-svc',
      who: 'waiter',
      waitSeconds: 30,
    });
    const outcome = waiting.then(
      () => null,
      (error: unknown) => error,
    );
    await waitFor(async () => (await store.queue('waited-svc')).waiters.length === 1, {
      what: 'the waiter in line',
    });
    assert.equal(reloaded(kept), 3, 'two watches and a wait ended');
    const error = await outcome;
    assert.ok(error instanceof TrackerError && error.code === ErrorCode.UNAUTHENTICATED, String(error));
    assert.deepEqual((await store.queue('waited-svc')).waiters, [], 'out of the line');
    for (const watch of [all, one]) {
      assert.deepEqual(
        watch.ends.map((end) => end.code),
        [ErrorCode.UNAUTHENTICATED],
      );
    }
    assert.deepEqual(unrelated.ends, [], 'another token goes on');
    // Nothing reaches the ended watches, and the queue's next change grants nobody.
    const before = all.messages.length;
    await service.release({ caller: kept, id: holder.lock.id });
    await waitFor(() => unrelated.messages.some((m) => m.kind === 'event' && m.event.type === 'released'), {
      what: 'the release seen by the other watcher',
    });
    assert.equal(all.messages.length, before);
    assert.deepEqual(await store.snapshot('waited-svc'), [], 'nothing granted to the revoked waiter');
    unrelated.stop();
    all.stop();
    one.stop();
  });

  test('narrowed: what the token may still do goes on; the rest ends PERMISSION_DENIED', async () => {
    const { service } = tested;
    const before = token('deployer', ['lock:write'], ['deploy-*', 'web-*'], 'sha256:narrowed');
    // Sessions that start are checked against the last reload: this token must be in it.
    reloaded(before);
    const deployWatch = await watching(before, 'deploy-a');
    const webWatch = await watching(before, 'web-a');
    const allWatch = await watching(before);
    const holder = await service.acquire({ caller: AUTHENTICATION_OFF, service: 'web-a', who: 'holder' });
    const waiting = service
      .acquire({ caller: before, service: 'web-a', who: 'waiter', waitSeconds: 30 })
      .then(
        () => null,
        (error: unknown) => error,
      );
    await waitFor(async () => (await store.queue('web-a')).waiters.length === 1, {
      what: 'the waiter in line',
    });
    const narrowed = token('deployer', ['lock:write'], ['deploy-*'], 'sha256:narrowed');
    assert.equal(reloaded(narrowed), 3);
    const error = await waiting;
    assert.ok(error instanceof TrackerError && error.code === ErrorCode.PERMISSION_DENIED, String(error));
    assert.deepEqual(deployWatch.ends, [], 'deploy-a is still allowed');
    assert.deepEqual(
      webWatch.ends.map((end) => end.code),
      [ErrorCode.PERMISSION_DENIED],
    );
    assert.deepEqual(
      allWatch.ends.map((end) => end.code),
      [ErrorCode.PERMISSION_DENIED],
      'a watch of everything: its snapshot may show services no longer allowed',
    );
    // Widened, or unchanged: nothing more ends. Without lock:read, the last watch does.
    const widened = token('deployer', ['lock:write'], ['deploy-*', 'db-*'], 'sha256:narrowed');
    const wide = await watching(narrowed);
    assert.equal(reloaded(widened), 0);
    assert.equal(wide.ends.length, 0);
    assert.equal(reloaded(token('deployer', [], null, 'sha256:narrowed')), 2);
    assert.deepEqual(
      [...deployWatch.ends, ...wide.ends].map((end) => end.code),
      [ErrorCode.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED],
    );
    await service.release({ caller: AUTHENTICATION_OFF, id: holder.lock.id });
    for (const watch of [deployWatch, webWatch, allWatch, wide]) watch.stop();
  });

  test('narrowed: a waiting label request is checked against its resources, a waiting group against each of its services', async () => {
    const { service } = tested;
    const admin = AUTHENTICATION_OFF;
    for (const name of ['phone-1', 'phone-2'])
      await service.putResource({ caller: admin, name, labels: ['phones'] });
    const holders = await Promise.all(
      ['phone-1', 'phone-2', 'db-main'].map((name) =>
        service.acquire({ caller: admin, service: name, who: 'holder' }),
      ),
    );
    const before = token('tester', ['lock:write'], ['phone-*', 'db-*'], 'sha256:tester');
    reloaded(before);
    const outcome = (promise: Promise<unknown>) =>
      promise.then(
        () => null,
        (error: unknown) => error,
      );
    const byLabel = outcome(
      service.acquire({ caller: before, label: 'phones', who: 'by-label', waitSeconds: 30 }),
    );
    const group = outcome(
      service.acquireGroup({
        caller: before,
        who: 'group',
        waitSeconds: 30,
        locks: [{ service: 'phone-1' }, { service: 'db-main' }],
      }),
    );
    await waitFor(async () => (await store.queue('phone-1')).waiters.length === 2, { what: 'both in line' });
    // The label ("phones") is no service: a reload that keeps phone-* and db-* ends neither.
    assert.equal(reloaded(before), 0);
    // Without db-*, the group may no longer be granted one of its services: it ends; the label waits on.
    assert.equal(reloaded(token('tester', ['lock:write'], ['phone-*'], 'sha256:tester')), 1);
    const error = await group;
    assert.ok(error instanceof TrackerError && error.code === ErrorCode.PERMISSION_DENIED, String(error));
    await service.release({ caller: admin, id: holders[1]?.lock.id ?? '' });
    const granted = await service.acquire({ caller: admin, service: 'unrelated', who: 'x' });
    assert.equal(await byLabel, null, 'the label request was granted phone-2');
    assert.equal((await store.snapshot('phone-2'))[0]?.who, 'by-label');
    assert.deepEqual(await store.snapshot('db-main').then((locks) => locks.map((lock) => lock.who)), [
      'holder',
    ]);
    await service.release({ caller: admin, id: granted.lock.id });
  });

  test('a watch or wait that starts after the reload that revoked its token is refused at once', async () => {
    const { service } = tested;
    const stale = token('gone', ['lock:write'], null, 'sha256:gone');
    reloaded();
    await assert.rejects(
      service.watch({ caller: stale, lastEventIdField: 'x', onEnd: () => assert.fail('not live') }, () => {}),
      (error: unknown) => error instanceof TrackerError && error.code === ErrorCode.UNAUTHENTICATED,
    );
    await service.acquire({ caller: AUTHENTICATION_OFF, service: 'late-svc', who: 'holder' });
    await assert.rejects(
      service.acquire({ caller: stale, service: 'late-svc', who: 'waiter', waitSeconds: 30 }),
      (error: unknown) => error instanceof TrackerError && error.code === ErrorCode.UNAUTHENTICATED,
    );
    assert.deepEqual((await store.queue('late-svc')).waiters, []);
  });
});
