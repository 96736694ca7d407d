import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Clock } from '../../core/clock.js';
import { storeUnavailable } from '../../core/errors.js';
import type { ListRequest, Lock, LockPage } from '../../core/lock.js';
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

  const insert = db.prepare<[string, string, string, number], LockRow>(
    `INSERT INTO locks (id, service, who, created_at) VALUES (?, ?, ?, ?)
     ON CONFLICT (service) DO NOTHING
     RETURNING id, service, who, created_at`,
  );
  const byService = db.prepare<[string], LockRow>(
    'SELECT id, service, who, created_at FROM locks WHERE service = ?',
  );
  const byId = db.prepare<[string], LockRow>('SELECT id, service, who, created_at FROM locks WHERE id = ?');
  const remove = db.prepare<[string], LockRow>(
    'DELETE FROM locks WHERE id = ? RETURNING id, service, who, created_at',
  );
  const filter = '(@service IS NULL OR service = @service) AND (@who IS NULL OR who = @who)';
  type Filter = { service: string | null; who: string | null };
  const page = db.prepare<[Filter & { limit: number; offset: number }], LockRow>(
    `SELECT id, service, who, created_at FROM locks WHERE ${filter}
     ORDER BY created_at, id LIMIT @limit OFFSET @offset`,
  );
  const count = db.prepare<[Filter], { total: number }>(
    `SELECT count(*) AS total FROM locks WHERE ${filter}`,
  );
  const ping = db.prepare('SELECT 1');

  // The INSERT alone is atomic, so a free service costs one statement. On a conflict the
  // insert is retried inside an IMMEDIATE transaction, which holds the write lock, so the
  // holder read next sees the row that caused the conflict: nobody can release it between.
  const acquireOrReadHolder = db.transaction((id: string, service: string, who: string): AcquireResult => {
    const created = insert.all(id, service, who, options.clock.now().getTime())[0];
    if (created) return { acquired: true, lock: toLock(created) };
    const holder = byService.get(service);
    if (!holder) throw new Error(`insert of lock ${id} conflicted but no holder of ${service} exists`);
    return { acquired: false, holder: toLock(holder) };
  });
  // RETURNING statements run with .all(), never .get(): .get() stops before SQLITE_DONE, so
  // the autocommit happens in sqlite3_reset, which skips the WAL auto-checkpoint; the WAL
  // then grows without bound (measured: 1.6 GB after a minute of load) and every read slows.
  const acquire = (id: string, service: string, who: string): AcquireResult => {
    const created = insert.all(id, service, who, options.clock.now().getTime())[0];
    if (created) return { acquired: true, lock: toLock(created) };
    return acquireOrReadHolder.immediate(id, service, who);
  };
  const list = db.transaction((request: ListRequest): LockPage => {
    const where = { service: request.service ?? null, who: request.who ?? null };
    const rows = page.all({ ...where, limit: request.perPage, offset: (request.page - 1) * request.perPage });
    return { locks: rows.map(toLock), total: count.get(where)?.total ?? 0 };
  });

  return {
    acquire: async (id, service, who) => guard(() => acquire(id, service, who)),
    get: async (id) => guard(() => nullable(byId.get(id))),
    release: async (id) => guard(() => nullable(remove.all(id)[0])),
    list: async (request) => guard(() => list.deferred(request)),
    ping: async () => guard(() => void ping.get()),
    close: async () => void db.close(),
  };
}

function toLock(row: LockRow): Lock {
  return { id: row.id, service: row.service, who: row.who, createdAt: new Date(row.created_at) };
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
