import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { AUTHENTICATION_OFF } from '../src/core/auth.js';
import { systemClock } from '../src/core/clock.js';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { createTestService } from './support/lock-service.js';
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
