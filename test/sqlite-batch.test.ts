import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode, TrackerError } from '../src/core/errors.js';
import type { AcquireRequest } from '../src/core/lock.js';
import { startCheckpointer } from '../src/storage/sqlite/checkpointer.js';
import { openSqliteLockStore, SqliteLockStore } from '../src/storage/sqlite/sqlite-lock-store.js';
import { ManualClock } from './support/manual-clock.js';
import { API, quickRequest } from './support/rest.js';
import { startServerProcess, tempDir } from './support/server-process.js';
import { waitFor } from './support/wait-for.js';

/**
 * Issue 17, point 1: the SQLite store's group commit. The writes asked in one event-loop turn
 * share one BEGIN IMMEDIATE … COMMIT, each in a savepoint, each answered with its own result
 * after that commit.
 */

const request = (service: string, who = 'batch'): AcquireRequest => ({
  id: randomUUID(),
  service,
  who,
  ttlSeconds: null,
});

/**
 * The commits in the store's WAL file so far: frames whose header carries the database size
 * after a commit (non-zero only on a transaction's last frame), counted while they carry the
 * WAL header's salts (frames past those are left over from before the WAL last started over).
 */
function commitsInWal(path: string): number {
  let wal: Buffer;
  try {
    wal = readFileSync(`${path}-wal`);
  } catch {
    return 0;
  }
  if (wal.length < 32) return 0;
  const pageSize = wal.readUInt32BE(8);
  const salts = [wal.readUInt32BE(16), wal.readUInt32BE(20)];
  let commits = 0;
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    if (wal.readUInt32BE(at + 8) !== salts[0] || wal.readUInt32BE(at + 12) !== salts[1]) break;
    if (wal.readUInt32BE(at + 4) !== 0) commits++;
  }
  return commits;
}

/** A store on a fresh file, its WAL left to SQLite (no checkpointer: the WAL is counted). */
function openStore() {
  const dir = tempDir();
  const path = join(dir.path, 'batch.db');
  const store = openSqliteLockStore({ path, clock: new ManualClock(), checkpointer: false });
  /** A second connection to the same file, as another tool would open it. */
  const side = new Database(path);
  return {
    store,
    path,
    side,
    held: (service: string) =>
      side.prepare('SELECT count(*) AS n FROM locks WHERE service = ?').get(service) as { n: number },
    events: () => (side.prepare('SELECT count(*) AS n FROM lock_events').get() as { n: number }).n,
    async close() {
      side.close();
      await store.close();
      dir.remove();
    },
  };
}

const isStoreUnavailable = (error: unknown) =>
  error instanceof TrackerError && error.code === ErrorCode.STORE_UNAVAILABLE;

describe('SQLite group commit', () => {
  test('the writes of one turn share one commit; two acquires of one service give one winner', async () => {
    const s = openStore();
    const before = commitsInWal(s.path);
    const first = await s.store.acquire(request('lone'));
    assert.ok(first.acquired);
    assert.equal(commitsInWal(s.path), before + 1, 'a lone write commits alone, at once');

    const started = commitsInWal(s.path);
    const results = await Promise.all([
      s.store.acquire(request('twice', 'a')),
      s.store.acquire(request('twice', 'b')),
      ...Array.from({ length: 8 }, (_, i) => s.store.acquire(request(`other-${i}`))),
      s.store.release(first.lock.id),
    ]);
    assert.equal(commitsInWal(s.path), started + 1, 'eleven writes of one turn, one commit');
    const [a, b] = results;
    assert.deepEqual([a.acquired, b.acquired].sort(), [false, true], 'one winner, one refusal');
    assert.equal(s.held('twice').n, 1);
    for (let i = 0; i < 8; i++) assert.equal(s.held(`other-${i}`).n, 1);
    assert.equal(s.held('lone').n, 0, 'the release of the same batch committed too');
    await s.close();
  });

  test('a write that fails is undone alone; the others of its batch commit', async () => {
    const s = openStore();
    const kept = await s.store.acquire(request('to-release'));
    assert.ok(kept.acquired);
    s.side.exec(`CREATE TRIGGER boom BEFORE INSERT ON locks WHEN NEW.service = 'boom'
                 BEGIN SELECT RAISE(ABORT, 'boom refused'); END`);
    const events = s.events();
    const started = commitsInWal(s.path);
    const [good, boom, released, also] = await Promise.allSettled([
      s.store.acquire(request('good')),
      s.store.acquire(request('boom')),
      s.store.release(kept.lock.id),
      s.store.acquire(request('also-good')),
    ]);
    assert.equal(commitsInWal(s.path), started + 1, 'one commit for the batch');
    assert.equal(good.status, 'fulfilled');
    assert.equal(boom.status, 'rejected');
    assert.match(String((boom as PromiseRejectedResult).reason), /boom refused/);
    assert.equal(released.status, 'fulfilled');
    assert.equal(also.status, 'fulfilled');
    assert.equal(s.held('good').n, 1);
    assert.equal(s.held('also-good').n, 1);
    assert.equal(s.held('boom').n, 0);
    assert.equal(s.held('to-release').n, 0);
    // Two acquires and a release recorded; nothing of the failed one.
    assert.equal(s.events(), events + 3);
    // Alone in its batch (no savepoint then), a failing write is undone all the same.
    await assert.rejects(s.store.acquire(request('boom')), /boom refused/);
    assert.equal(s.held('boom').n, 0);
    assert.equal(s.events(), events + 3);
    assert.ok((await s.store.acquire(request('after-boom'))).acquired);
    await s.close();
  });

  test('a failed COMMIT fails every write of its batch with STORE_UNAVAILABLE, and none is visible', async () => {
    const s = openStore();
    const kept = await s.store.acquire(request('still-held'));
    assert.ok(kept.acquired);
    // A deferred foreign key is checked at COMMIT: an acquire of 'doom' makes the whole
    // transaction's COMMIT fail, whatever else it holds.
    s.side.exec(`
      CREATE TABLE doom_parent (id INTEGER PRIMARY KEY);
      CREATE TABLE doom_child (parent INTEGER REFERENCES doom_parent (id) DEFERRABLE INITIALLY DEFERRED);
      CREATE TRIGGER doom AFTER INSERT ON locks WHEN NEW.service = 'doom'
      BEGIN INSERT INTO doom_child VALUES (42); END`);
    const events = s.events();
    const outcomes = await Promise.allSettled([
      s.store.acquire(request('innocent')),
      s.store.acquire(request('doom')),
      s.store.release(kept.lock.id),
    ]);
    for (const outcome of outcomes) {
      assert.equal(outcome.status, 'rejected');
      assert.ok(isStoreUnavailable((outcome as PromiseRejectedResult).reason), String(outcome));
    }
    assert.equal(s.held('innocent').n, 0);
    assert.equal(s.held('doom').n, 0);
    assert.equal(s.held('still-held').n, 1, 'the release was rolled back with the rest');
    assert.equal(s.events(), events, 'no history for a batch that did not commit');
    // Alone in its batch, the same.
    await assert.rejects(s.store.acquire(request('doom')), isStoreUnavailable);
    assert.equal(s.held('doom').n, 0);
    assert.equal(s.events(), events);
    // The store is not left inside the failed transaction: the next batch commits.
    const after = await s.store.acquire(request('afterwards'));
    assert.ok(after.acquired);
    assert.equal(s.held('afterwards').n, 1);
    await s.close();
  });

  test('no checkpointer thread for :memory: or when turned off, however much is written', async () => {
    const dir = tempDir();
    const stores = [
      new SqliteLockStore({ path: ':memory:', clock: new ManualClock() }),
      new SqliteLockStore({ path: join(dir.path, 'off.db'), clock: new ManualClock(), checkpointer: false }),
    ];
    for (const store of stores) {
      for (let i = 0; i < 250; i++) await store.acquire(request(`many-${i}`));
      assert.equal(store.checkpointing, false);
      await store.close();
    }
    dir.remove();
  });

  test('writes asked before close are committed and answered', async () => {
    const s = openStore();
    const pending = s.store.acquire(request('at-close'));
    const closing = s.store.close();
    const result = await pending;
    assert.ok(result.acquired);
    await closing;
  });

  test('the checkpointer keeps the WAL bounded off the request path', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'checkpointed.db');
    const store = new SqliteLockStore({ path, clock: new ManualClock() });
    // A store that has written little runs no thread; its commits checkpoint as SQLite does.
    for (let i = 0; i < 50; i++) await store.acquire(request(`few-${i}`));
    assert.equal(store.checkpointing, false);
    // Past 200 commits the worker takes over, and the store's own commits checkpoint only if
    // it falls behind (past BACKSTOP_FRAMES): without either, 3000 pairs would leave some
    // 100 MB of WAL.
    for (let i = 0; i < 3000; i++) {
      const result = await store.acquire(request(`cp-${i % 32}`));
      assert.ok(result.acquired);
      await store.release(result.lock.id);
    }
    assert.equal(store.checkpointing, true);
    const bytes = statSync(`${path}-wal`).size;
    assert.ok(bytes < 16 * 1024 * 1024, `WAL is ${bytes} bytes`);
    await store.close();
    dir.remove();
  });
});

describe('SQLite WAL checkpointer', () => {
  test('a worker copies the WAL and, past 1000 frames, holds the writes back to start it over', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'worker.db');
    const writer = new Database(path);
    writer.pragma('journal_mode = WAL');
    writer.pragma('wal_autocheckpoint = 0');
    writer.exec('CREATE TABLE t (x BLOB)');
    // One transaction of some 1200 pages: past RESTART_FRAMES.
    const insert = writer.prepare('INSERT INTO t VALUES (randomblob(4000))');
    writer.transaction(() => {
      for (let i = 0; i < 1200; i++) insert.run();
    })();
    assert.equal(commitsInWal(path), 2);
    const calls: string[] = [];
    const checkpointer = startCheckpointer(path, {
      hold: () => calls.push('hold'),
      resume: () => calls.push('resume'),
      lost: () => calls.push('lost'),
    });
    try {
      await waitFor(() => calls.includes('resume'), { what: 'the worker to hold and resume the writes' });
      assert.deepEqual(calls.slice(0, 2), ['hold', 'resume']);
      // Everything was copied: the next writer starts the WAL over.
      insert.run();
      assert.equal(commitsInWal(path), 1);
    } finally {
      await checkpointer.stop();
      writer.close();
      dir.remove();
    }
    assert.ok(!calls.includes('lost'), 'a stop asked for is not a lost worker');
  });
});

describe('SQLite group commit over HTTP', () => {
  test('a client that hangs up while its batch commits: its acquire commits, the others are answered', async () => {
    const dir = tempDir();
    const server = await startServerProcess({
      args: ['--http-port', '0', '--grpc-port', '0', '--database-url', `sqlite:${join(dir.path, 'http.db')}`],
    });
    try {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 20 });
      const body = JSON.stringify({ service: 'hung-up', who: 'gone' });
      // The whole request, then the socket closes at once (FIN), while others are in flight.
      const gone = new Promise<void>((resolve, reject) => {
        const socket = connect(server.httpPort, '127.0.0.1', () => {
          socket.end(
            `POST ${API}/lock HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
              `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
          );
          socket.destroySoon();
        });
        socket.on('close', () => resolve());
        socket.on('error', reject);
      });
      const others = Array.from({ length: 20 }, (_, i) =>
        quickRequest(agent, 'POST', `${server.baseUrl}${API}/lock`, { service: `stays-${i}`, who: 'here' }),
      );
      const answers = await Promise.all(others);
      await gone;
      for (const answer of answers) assert.equal(answer.status, 201, answer.text);
      const listed = await waitFor(
        async () => {
          const reply = await quickRequest(agent, 'GET', `${server.baseUrl}${API}/locks/list?who=gone`);
          const locks = (JSON.parse(reply.text) as { locks: { service: string }[] }).locks;
          return locks.length === 1 ? locks : null;
        },
        { what: 'the hung-up client’s lock to be listed' },
      );
      assert.equal(listed[0]?.service, 'hung-up');
      const health = await quickRequest(agent, 'GET', `${server.baseUrl}/healthz`);
      assert.equal(health.status, 200);
      agent.destroy();
    } finally {
      await server.stop();
      dir.remove();
    }
  });
});
