import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Clock } from '../../core/clock.js';
import { storeUnavailable } from '../../core/errors.js';
import type { AcquireRequest, ListRequest, Lock, LockPage } from '../../core/lock.js';
import type { AcquireResult, LockStore } from '../../core/lock-store.js';
import { readMigrations } from '../migrations.js';
import { migrate } from './migrate.js';

export interface SqliteStoreOptions {
  /** A file path, or ':memory:' for a throwaway store. The folder is created if missing. */
  readonly path: string;
  readonly clock: Clock;
  /**
   * 'normal' (default): in WAL mode a killed process loses nothing committed; a power cut
   * may lose the last transactions. 'full': survives power cuts too, at a cost per write.
   */
  readonly synchronous?: 'normal' | 'full';
  /** How long a statement waits for another process's write lock, in ms (default 5000). */
  readonly busyTimeoutMs?: number;
}

interface LockRow {
  id: string;
  service: string;
  who: string;
  created_at: number;
  ttl_seconds: number | null;
  expires_at: number | null;
  fencing_token: number;
}

const MIGRATIONS = new URL('./migrations/', import.meta.url);

/**
 * The embedded store: one SQLite file, shared safely by several processes on one host.
 * better-sqlite3 is synchronous, so each call runs to completion on the event loop; the
 * statements are prepared once and every transaction is a few statements long.
 */
export function openSqliteLockStore(options: SqliteStoreOptions): LockStore {
  if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
  const db = new Database(options.path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    migrate(db, readMigrations(MIGRATIONS));
  } catch (error) {
    db.close();
    throw error;
  }

  const columns = 'id, service, who, created_at, ttl_seconds, expires_at, fencing_token';
  // A row is a held lock while it has no expiry or its expiry is still ahead (@now: the
  // store's clock, in ms). Expired rows may linger; every read filters them out.
  const live = '(expires_at IS NULL OR expires_at > @now)';
  type Now = { now: number };

  const deleteExpired = db.prepare<[{ service: string } & Now]>(
    'DELETE FROM locks WHERE service = @service AND expires_at <= @now',
  );
  // The token is the service's last one plus one; the locks_record_fencing_token trigger
  // records it in `services` when, and only when, the row is inserted.
  const insert = db.prepare<
    [{ id: string; service: string; who: string; ttl: number | null; expires: number | null } & Now],
    LockRow
  >(
    `INSERT INTO locks (${columns})
     VALUES (@id, @service, @who, @now, @ttl, @expires,
             coalesce((SELECT last_token FROM services WHERE service = @service), 0) + 1)
     ON CONFLICT (service) DO NOTHING
     RETURNING ${columns}`,
  );
  const byService = db.prepare<[{ service: string } & Now], LockRow>(
    `SELECT ${columns} FROM locks WHERE service = @service AND ${live}`,
  );
  const byId = db.prepare<[{ id: string } & Now], LockRow>(
    `SELECT ${columns} FROM locks WHERE id = @id AND ${live}`,
  );
  const remove = db.prepare<[{ id: string } & Now], LockRow>(
    `DELETE FROM locks WHERE id = @id AND ${live} RETURNING ${columns}`,
  );
  const renew = db.prepare<[{ id: string; ttl: number | null } & Now], LockRow>(
    `UPDATE locks
     SET ttl_seconds = coalesce(@ttl, ttl_seconds),
         expires_at = CASE WHEN coalesce(@ttl, ttl_seconds) IS NULL THEN NULL
                           ELSE @now + coalesce(@ttl, ttl_seconds) * 1000 END
     WHERE id = @id AND ${live}
     RETURNING ${columns}`,
  );
  const filter = `(@service IS NULL OR service = @service) AND (@who IS NULL OR who = @who) AND ${live}`;
  type Filter = { service: string | null; who: string | null } & Now;
  const page = db.prepare<[Filter & { limit: number; offset: number }], LockRow>(
    `SELECT ${columns} FROM locks WHERE ${filter}
     ORDER BY created_at, id LIMIT @limit OFFSET @offset`,
  );
  const count = db.prepare<[Filter], { total: number }>(
    `SELECT count(*) AS total FROM locks WHERE ${filter}`,
  );
  const ping = db.prepare('SELECT 1');
  const now = () => options.clock.now().getTime();

  const insertLock = (request: AcquireRequest, at: number): LockRow | undefined =>
    insert.all({
      ...request,
      ttl: request.ttlSeconds,
      expires: request.ttlSeconds === null ? null : at + request.ttlSeconds * 1000,
      now: at,
    })[0];
  // After a conflict: one IMMEDIATE transaction, which holds the write lock (across
  // processes too), so removing an expired holder, the insert that UNIQUE(service) decides
  // and the holder read all see one state.
  const takeOverOrReadHolder = db.transaction((request: AcquireRequest): AcquireResult => {
    const at = now();
    deleteExpired.run({ service: request.service, now: at });
    const created = insertLock(request, at);
    if (created) return { acquired: true, lock: toLock(created) };
    const holder = byService.get({ service: request.service, now: at });
    if (!holder)
      throw new Error(`insert of lock ${request.id} conflicted but no holder of ${request.service} exists`);
    return { acquired: false, holder: toLock(holder) };
  });
  // A free service costs one statement: the INSERT (with its trigger) is atomic on its own.
  // RETURNING statements run with .all(), never .get(): .get() stops before SQLITE_DONE, so
  // the autocommit happens in sqlite3_reset, which skips the WAL auto-checkpoint; the WAL
  // then grows without bound (measured: 1.6 GB after a minute of load).
  const acquire = (request: AcquireRequest): AcquireResult => {
    const created = insertLock(request, now());
    if (created) return { acquired: true, lock: toLock(created) };
    return takeOverOrReadHolder.immediate(request);
  };
  const list = db.transaction((request: ListRequest): LockPage => {
    const where = { service: request.service ?? null, who: request.who ?? null, now: now() };
    const rows = page.all({ ...where, limit: request.perPage, offset: (request.page - 1) * request.perPage });
    return { locks: rows.map(toLock), total: count.get(where)?.total ?? 0 };
  });

  return {
    acquire: async (request) => guard(() => acquire(request)),
    get: async (id) => guard(() => nullable(byId.get({ id, now: now() }))),
    release: async (id) => guard(() => nullable(remove.all({ id, now: now() })[0])),
    renew: async (id, ttlSeconds) => guard(() => nullable(renew.all({ id, ttl: ttlSeconds, now: now() })[0])),
    list: async (request) => guard(() => list.deferred(request)),
    ping: async () => guard(() => void ping.get()),
    close: async () => void db.close(),
  };
}

function toLock(row: LockRow): Lock {
  return {
    id: row.id,
    service: row.service,
    who: row.who,
    createdAt: new Date(row.created_at),
    ttlSeconds: row.ttl_seconds,
    expiresAt: row.expires_at === null ? null : new Date(row.expires_at),
    fencingToken: row.fencing_token,
  };
}

function nullable(row: LockRow | undefined): Lock | null {
  return row ? toLock(row) : null;
}

/** SQLite result codes that mean "the store can't serve now" rather than "bug". */
const UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|IOERR|FULL|READONLY|CANTOPEN|PROTOCOL)/;

function guard<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && UNAVAILABLE.test(code)) throw storeUnavailable(error);
    throw error;
  }
}
