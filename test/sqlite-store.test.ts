import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import { readMigrations, SchemaTooNewError } from '../src/storage/migrations.js';
import { BACKSTOP_FRAMES } from '../src/storage/sqlite/checkpointer.js';
import { migrate } from '../src/storage/sqlite/migrate.js';
import { openSqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { runLockStoreContract } from './contract/lock-store.contract.js';
import { runManyHoldersContract } from './contract/many-holders.contract.js';
import { runWebhookStoreContract } from './contract/webhooks.contract.js';
import { ManualClock } from './support/manual-clock.js';
import { tempDir } from './support/server-process.js';
import { writeFutureSchema } from './support/sqlite.js';

function openWithManualClock(path: (dir: string) => string) {
  return async () => {
    const dir = tempDir();
    const clock = new ManualClock();
    const store = openSqliteLockStore({ path: path(dir.path), clock });
    return {
      store,
      now: () => clock.now(),
      advance: async (ms: number) => clock.advance(ms),
      cleanup: async () => {
        await store.close();
        dir.remove();
      },
    };
  };
}

runLockStoreContract(
  'sqlite file',
  openWithManualClock((dir) => join(dir, 'nested', 'folder', 'tracker.db')),
);
runLockStoreContract(
  'sqlite :memory:',
  openWithManualClock(() => ':memory:'),
);
runManyHoldersContract(
  'sqlite file',
  openWithManualClock((dir) => join(dir, 'many.db')),
);
runManyHoldersContract(
  'sqlite :memory:',
  openWithManualClock(() => ':memory:'),
);
runWebhookStoreContract(
  'sqlite file',
  openWithManualClock((dir) => join(dir, 'hooks.db')),
);

describe('SQLite store specifics', () => {
  test('creates the folder, records migrations, uses WAL', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'a', 'b', 'tracker.db');
    const store = openSqliteLockStore({ path, clock: new ManualClock() });
    await store.close();
    const db = new Database(path, { readonly: true });
    const versions = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all();
    assert.deepEqual(versions, [
      { version: 1, name: 'create_locks' },
      { version: 2, name: 'leases_and_fencing' },
      { version: 3, name: 'wait_queue' },
      { version: 4, name: 'lock_events' },
      { version: 5, name: 'lock_owner' },
      { version: 6, name: 'idempotency_keys' },
      { version: 7, name: 'lock_owner_key' },
      { version: 8, name: 'many_holders' },
      { version: 9, name: 'list_indexes' },
      { version: 10, name: 'notes_and_steal' },
      { version: 11, name: 'webhooks' },
    ]);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.close();
    dir.remove();
  });

  test('reopening a file applies nothing twice and keeps the locks', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tracker.db');
    const first = openSqliteLockStore({ path, clock: new ManualClock() });
    const result = await first.acquire({ id: randomUUID(), service: 'kept', who: 'me', ttlSeconds: null });
    assert.ok(result.acquired);
    await first.close();
    const second = openSqliteLockStore({ path, clock: new ManualClock() });
    assert.deepEqual(await second.get(result.lock.id), result.lock);
    assert.equal(
      (await second.acquire({ id: randomUUID(), service: 'kept', who: 'other', ttlSeconds: null })).acquired,
      false,
    );
    await second.close();
    dir.remove();
  });

  test('the fencing counter survives a restart and is shared by processes on one file', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'fencing.db');
    const take = async (store: ReturnType<typeof openSqliteLockStore>) => {
      const result = await store.acquire({ id: randomUUID(), service: 'fenced', who: 'w', ttlSeconds: null });
      assert.ok(result.acquired);
      assert.ok(await store.release(result.lock.id));
      return result.lock.fencingToken;
    };
    const first = openSqliteLockStore({ path, clock: new ManualClock() });
    const before = [await take(first), await take(first)];
    await first.close();
    const a = openSqliteLockStore({ path, clock: new ManualClock() });
    const b = openSqliteLockStore({ path, clock: new ManualClock() });
    const after = [await take(a), await take(b), await take(a)];
    assert.deepEqual([...before, ...after], [1, 2, 3, 4, 5]);
    await a.close();
    await b.close();
    dir.remove();
  });

  test('a lock taken before the leases migration stays held and is fenced below new tokens', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'old.db');
    const old = new Database(path);
    old.pragma('journal_mode = WAL');
    migrate(old, readMigrations(new URL('../src/storage/sqlite/migrations/', import.meta.url)).slice(0, 1));
    old
      .prepare("INSERT INTO locks (id, service, who, created_at) VALUES (?, 'legacy', 'old-holder', 0)")
      .run('00000000-0000-4000-8000-000000000001');
    old.close();
    const store = openSqliteLockStore({ path, clock: new ManualClock() });
    const legacy = await store.get('00000000-0000-4000-8000-000000000001');
    assert.deepEqual(
      legacy && { ttl: legacy.ttlSeconds, expires: legacy.expiresAt, token: legacy.fencingToken },
      {
        ttl: null,
        expires: null,
        token: 1,
      },
    );
    assert.equal(
      (await store.acquire({ id: randomUUID(), service: 'legacy', who: 'new', ttlSeconds: null })).acquired,
      false,
    );
    await store.release('00000000-0000-4000-8000-000000000001');
    const next = await store.acquire({ id: randomUUID(), service: 'legacy', who: 'new', ttlSeconds: null });
    assert.ok(next.acquired && next.lock.fencingToken === 2);
    await store.close();
    dir.remove();
  });

  test('two connections on one file still let exactly one acquire win', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'shared.db');
    const a = openSqliteLockStore({ path, clock: new ManualClock() });
    const b = openSqliteLockStore({ path, clock: new ManualClock() });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 ? a : b).acquire({
          id: randomUUID(),
          service: 'one-file',
          who: `racer-${i}`,
          ttlSeconds: null,
        }),
      ),
    );
    assert.equal(results.filter((result) => result.acquired).length, 1);
    const lock = (await a.list({ page: 1, perPage: 10 })).locks[0];
    assert.ok(lock);
    assert.deepEqual(await b.release(lock.id), lock);
    assert.equal(await a.get(lock.id), null);
    await a.close();
    await b.close();
    dir.remove();
  });

  test('a file locked by another writer past the busy timeout is STORE_UNAVAILABLE, not a crash', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'busy.db');
    const store = openSqliteLockStore({ path, clock: new ManualClock(), busyTimeoutMs: 50 });
    const blocker = new Database(path);
    blocker.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      store.acquire({ id: randomUUID(), service: 'busy', who: 'me', ttlSeconds: null }),
      (error: unknown) => error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE,
    );
    blocker.exec('ROLLBACK');
    blocker.close();
    assert.ok(
      (await store.acquire({ id: randomUUID(), service: 'busy', who: 'me', ttlSeconds: null })).acquired,
      'serves again once the file is free',
    );
    await store.close();
    dir.remove();
  });

  test('the WAL is checkpointed as it grows, not left to grow without bound', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'wal.db');
    const store = openSqliteLockStore({ path, clock: new ManualClock() });
    // 2000 pairs write about 6000 WAL frames (24 MB). The checkpointer restarts the WAL past
    // 1000 frames; should its thread fall behind (a loaded machine), the commits checkpoint
    // themselves past BACKSTOP_FRAMES: either way the WAL stays near or under that.
    for (let i = 0; i < 2000; i++) {
      const result = await store.acquire({
        id: randomUUID(),
        service: `wal-${i % 16}`,
        who: 'w',
        ttlSeconds: null,
      });
      assert.ok(result.acquired);
      assert.ok(await store.release(result.lock.id));
    }
    const walBytes = statSync(`${path}-wal`).size;
    assert.ok(walBytes < (BACKSTOP_FRAMES + 1000) * 4096, `WAL is ${walBytes} bytes`);
    await store.close();
    dir.remove();
  });

  test('a schema newer than this binary is refused with a clear message', () => {
    const dir = tempDir();
    const path = join(dir.path, 'future.db');
    writeFutureSchema(path, 99);
    assert.throws(
      () => openSqliteLockStore({ path, clock: new ManualClock() }),
      (error: unknown) =>
        error instanceof SchemaTooNewError &&
        /version 99 but this Tracker knows only up to \d+; upgrade Tracker$/.test(error.message),
    );
    dir.remove();
  });
});
