import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import { systemClock } from '../src/core/clock.js';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import { WAITER_LEASE_MS } from '../src/core/lock-store.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService } from './support/lock-service.js';
import { ManualClock } from './support/manual-clock.js';
import { tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

test('a wait that fails because the store is unreachable leaves the queue once it is back', async () => {
  const dir = tempDir();
  const path = join(dir.path, 'tracker.db');
  // A short busy timeout: a write blocked by another connection fails as STORE_UNAVAILABLE.
  const store = openSqliteLockStore({ path, clock: systemClock, busyTimeoutMs: 20 });
  const { service, close } = createTestService(store, { owner: 'replica-a', recheckMs: 50 });
  const caller = AUTHENTICATION_OFF;
  const blocker = new Database(path);
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const waiting = service.acquire({ caller, service: 'deploy', who: 'waiter', waitSeconds: 30 });
    waiting.catch(() => {});
    await waitFor(async () => (await store.queue('deploy')).waiters.length === 1, {
      what: 'the waiter in line',
    });

    // The waiter's next look (a settle, a write) finds the file locked: its caller gets 503.
    blocker.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      waiting,
      (error: unknown) => error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE,
    );
    blocker.exec('ROLLBACK');

    // Nobody waits for that request any more: it must not stay in line to be granted a lock
    // nobody knows of.
    await waitFor(async () => (await store.queue('deploy')).waiters.length === 0, {
      what: 'the failed wait to leave the queue',
    });
    await service.release({ caller, id: holder.lock.id });
    assert.deepEqual((await store.list({ page: 1, perPage: 10, service: 'deploy' })).locks, []);
    const [last] = await store.history({ service: 'deploy', limit: 1, before: undefined });
    assert.equal(last?.type, 'released', 'nobody was granted the lock after the holder left');
  } finally {
    close();
    blocker.close();
    await store.close();
    dir.remove();
  }
});

test('a waiter that missed its grant, whose lock then ended, answers LOCK_ENDED at its deadline, not a timeout', async () => {
  const store = openSqliteLockStore({ path: ':memory:', clock: systemClock });
  // The waiter's replica hears nothing of the store's changes (its notifications are lost,
  // as while a LISTEN connection reconnects), and looks again only at its deadline.
  let looks = 0;
  const deaf = new Proxy(store, {
    get(target, name) {
      const member: unknown = Reflect.get(target, name);
      if (name === 'onChange') return () => () => {};
      if (typeof member !== 'function') return member;
      if (name !== 'settle') return member.bind(target);
      return async (service: string) => {
        try {
          return await target.settle(service);
        } finally {
          looks++;
        }
      };
    },
  });
  const { service, close } = createTestService(deaf, { recheckMs: 60_000 });
  const caller = AUTHENTICATION_OFF;
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const waiting = service.acquire({ caller, service: 'deploy', who: 'waiter', waitSeconds: 1 });
    waiting.catch(() => {});
    await waitFor(() => looks > 0, { what: "the waiter's first look (then it sleeps to its deadline)" });
    // The holder leaves: the waiter is granted its lock, unheard; an operator ends that lock.
    await store.release(holder.lock.id);
    const [granted] = await store.snapshot('deploy');
    assert.equal(granted?.who, 'waiter');
    await store.forceRelease(granted.id, 'stuck job');
    await assert.rejects(waiting, (error: unknown) => {
      assert.ok(error instanceof TrackerError);
      assert.equal(error.code, ErrorCode.LOCK_ENDED, error.message);
      assert.equal(error.details.lockId, granted.id);
      return true;
    });
  } finally {
    close();
    await store.close();
  }
});

test('a waiter dropped from the line (its replica seemed dead) and never granted answers WAIT_TIMEOUT, not LOCK_ENDED', async () => {
  // The store's clock and the waiter's deadlines move apart: the store first sees the waiter's
  // heartbeat run out, then the wait reaches its deadline.
  const storeClock = new ManualClock();
  const waiterClock = new ManualClock();
  const store = openSqliteLockStore({ path: ':memory:', clock: storeClock });
  const { service, close } = createTestService(store, { clock: waiterClock, recheckMs: 20 });
  const caller = AUTHENTICATION_OFF;
  try {
    const holder = await service.acquire({ caller, service: 'deploy', who: 'holder' });
    const waiting = service.acquire({ caller, service: 'deploy', who: 'waiter', waitSeconds: 10 });
    waiting.catch(() => {});
    await waitFor(async () => (await store.queue('deploy')).waiters.length === 1, {
      what: 'the waiter in line',
    });
    // Others come and go meanwhile: the look back through the history passes their events.
    for (let i = 0; i < 3; i++) {
      await assert.rejects(service.acquire({ caller, service: 'deploy', who: `other-${i}` }));
    }
    storeClock.advance(WAITER_LEASE_MS + 1000);
    await store.sweep(100);
    assert.equal((await store.queue('deploy')).waiters.length, 0, 'dropped as abandoned');
    waiterClock.advance(11_000);
    await assert.rejects(waiting, (error: unknown) => {
      assert.ok(error instanceof TrackerError);
      assert.equal(error.code, ErrorCode.WAIT_TIMEOUT, error.message);
      return true;
    });
    assert.equal((await store.get(holder.lock.id))?.who, 'holder');
  } finally {
    close();
    await store.close();
  }
});
