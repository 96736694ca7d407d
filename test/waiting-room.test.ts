import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import { createLockService } from '../src/core/lock-service.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { tempDir } from './support/server-process.js';

test('a wait that fails because the store is unreachable leaves the queue once it is back', async () => {
  const dir = tempDir();
  const path = join(dir.path, 'tracker.db');
  // A short busy timeout: a write blocked by another connection fails as STORE_UNAVAILABLE.
  const store = openSqliteLockStore({ path, clock: { now: () => new Date() }, busyTimeoutMs: 20 });
  const service = createLockService({ store, newId: randomUUID, owner: 'replica-a', recheckMs: 50 });
  const blocker = new Database(path);
  try {
    const holder = await service.acquire('deploy', 'holder');
    const waiting = service.acquire('deploy', 'waiter', undefined, { waitSeconds: 30 });
    waiting.catch(() => {});
    for (let i = 0; i < 100 && (await store.queue('deploy')).waiters.length === 0; i++) await delay(10);
    assert.equal((await store.queue('deploy')).waiters.length, 1, 'the waiter is in line');

    // The waiter's next look (a settle, a write) finds the file locked: its caller gets 503.
    blocker.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      waiting,
      (error: unknown) => error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE,
    );
    blocker.exec('ROLLBACK');

    // Nobody waits for that request any more: it must not stay in line to be granted a lock
    // nobody knows of.
    for (let i = 0; i < 300 && (await store.queue('deploy')).waiters.length > 0; i++) await delay(10);
    assert.deepEqual((await store.queue('deploy')).waiters, [], 'the failed wait left the queue');
    await service.release(holder.id);
    assert.deepEqual((await store.list({ page: 1, perPage: 10, service: 'deploy' })).locks, []);
    const [last] = await store.history({ service: 'deploy', limit: 1, before: undefined });
    assert.equal(last?.type, 'released', 'nobody was granted the lock after the holder left');
  } finally {
    service.close();
    blocker.close();
    await store.close();
    dir.remove();
  }
});
