import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Clock } from '../../core/clock.js';
import { storeUnavailable } from '../../core/errors.js';
import type {
  AcquireRequest,
  HistoryQuery,
  ListRequest,
  Lock,
  LockEventRecord,
  LockEventType,
  LockPage,
  Queue,
  Waiter,
} from '../../core/lock.js';
import {
  type AcquireResult,
  type LockStore,
  type QueueRequest,
  WAITER_LEASE_MS,
} from '../../core/lock-store.js';
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
  owner: string | null;
  /** Live waiters of the service, where the statement counts them. */
  waiters?: number;
}

interface WaiterRow {
  ticket: number;
  service: string;
  who: string;
  ttl_seconds: number | null;
  lock_id: string;
  lock_owner: string | null;
  since: number;
  alive_until: number;
}

interface EventRow {
  id: number;
  at: number;
  type: string;
  lock_id: string;
  service: string;
  who: string;
  created_at: number;
  ttl_seconds: number | null;
  expires_at: number | null;
  fencing_token: number | null;
  waiters: number;
  owner: string | null;
  held_ms: number | null;
  reason: string | null;
}

/**
 * What the operation running now tells the history triggers (migration 004), through the
 * SQL functions tracker_now() and tracker_context(key). better-sqlite3 runs each operation
 * to completion on the event loop, so one object per connection is never shared by two.
 */
interface StatementContext {
  /** The store clock's reading for the operation, in unix ms: the @now of its statements. */
  now: number;
  /** 'force-released' during a force release. */
  release: string | null;
  /** The force release's reason. */
  reason: string | null;
  /** 'granted' while the queue's head is being granted. */
  dequeue: string | null;
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
  const context: StatementContext = { now: 0, release: null, reason: null, dequeue: null };
  try {
    // Registered before the migrations: the history triggers call them.
    db.function('tracker_now', { deterministic: false }, () => context.now);
    db.function('tracker_context', { deterministic: false }, (key: unknown) =>
      key === 'release' || key === 'reason' || key === 'dequeue' ? context[key] : null,
    );
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    migrate(db, readMigrations(MIGRATIONS));
  } catch (error) {
    db.close();
    throw error;
  }

  const columns = 'id, service, who, created_at, ttl_seconds, expires_at, fencing_token, owner';
  // A row is a held lock while it has no expiry or its expiry is still ahead (@now: the
  // store's clock, in ms). Expired rows may linger; every read filters them out.
  const live = '(expires_at IS NULL OR expires_at > @now)';
  type Now = { now: number };

  const deleteExpired = db.prepare<[{ service: string } & Now]>(
    'DELETE FROM locks WHERE service = @service AND expires_at <= @now',
  );
  // The token is the service's last one plus one; the locks_record_fencing_token trigger
  // records it in `services` when, and only when, the row is inserted. `guard` may refuse
  // the insert before the unique constraint is even asked.
  type InsertParams = {
    id: string;
    service: string;
    who: string;
    ttl: number | null;
    expires: number | null;
    owner: string | null;
  } & Now;
  const insertStatement = (guard: string) =>
    db.prepare<[InsertParams], LockRow>(
      `INSERT INTO locks (${columns})
       SELECT @id, @service, @who, @now, @ttl, @expires,
              coalesce((SELECT last_token FROM services WHERE service = @service), 0) + 1, @owner
       WHERE ${guard}
       ON CONFLICT (service) DO NOTHING
       RETURNING ${columns}`,
    );
  const insert = insertStatement('true');
  // For a newcomer: a free service is taken only when nobody waits for it (a free service
  // with waiters is theirs, granted in the transaction below).
  const insertUnlessQueued = insertStatement(
    'NOT EXISTS (SELECT 1 FROM waiters WHERE service = @service AND alive_until > @now)',
  );
  // The live waiters of the row's service (RETURNING cannot hold a subquery, so only reads
  // count them; writes count with countWaiters).
  const waiting = `(SELECT count(*) FROM waiters w WHERE w.service = locks.service AND w.alive_until > @now) AS waiters`;
  const byService = db.prepare<[{ service: string } & Now], LockRow>(
    `SELECT ${columns}, ${waiting} FROM locks WHERE service = @service AND ${live}`,
  );
  const byId = db.prepare<[{ id: string } & Now], LockRow>(
    `SELECT ${columns}, ${waiting} FROM locks WHERE id = @id AND ${live}`,
  );
  const countWaiters = db.prepare<[{ service: string } & Now], { n: number }>(
    'SELECT count(*) AS n FROM waiters WHERE service = @service AND alive_until > @now',
  );
  const headWaiter = db.prepare<[{ service: string }], WaiterRow>(
    'SELECT * FROM waiters WHERE service = @service ORDER BY ticket LIMIT 1',
  );
  const deleteWaiter = db.prepare<[{ ticket: number }], { service: string }>(
    'DELETE FROM waiters WHERE ticket = @ticket RETURNING service',
  );
  const insertWaiter = db.prepare<
    [
      {
        service: string;
        who: string;
        ttl: number | null;
        lockId: string;
        lockOwner: string | null;
        owner: string;
        aliveUntil: number;
      } & Now,
    ],
    WaiterRow
  >(
    `INSERT INTO waiters (service, who, ttl_seconds, lock_id, lock_owner, owner, since, alive_until)
     VALUES (@service, @who, @ttl, @lockId, @lockOwner, @owner, @now, @aliveUntil)
     RETURNING *`,
  );
  const liveWaiters = db.prepare<[{ service: string } & Now], WaiterRow>(
    'SELECT * FROM waiters WHERE service = @service AND alive_until > @now ORDER BY ticket',
  );
  const aheadOf = db.prepare<[{ service: string; ticket: number } & Now], { n: number }>(
    'SELECT count(*) AS n FROM waiters WHERE service = @service AND ticket < @ticket AND alive_until > @now',
  );
  const heartbeat = db.prepare<[{ owner: string; aliveUntil: number }]>(
    'UPDATE waiters SET alive_until = @aliveUntil WHERE owner = @owner',
  );
  // `@owner` null: any owner (authentication off, or an admin); else only that owner's lock.
  type ByOwner = { id: string; owner: string | null } & Now;
  const ownedBy = '(@owner IS NULL OR owner = @owner)';
  const remove = db.prepare<[ByOwner], LockRow>(
    `DELETE FROM locks WHERE id = @id AND ${live} AND ${ownedBy} RETURNING ${columns}`,
  );
  const renew = db.prepare<[ByOwner & { ttl: number | null }], LockRow>(
    `UPDATE locks
     SET ttl_seconds = coalesce(@ttl, ttl_seconds),
         expires_at = CASE WHEN coalesce(@ttl, ttl_seconds) IS NULL THEN NULL
                           ELSE @now + coalesce(@ttl, ttl_seconds) * 1000 END
     WHERE id = @id AND ${live} AND ${ownedBy}
     RETURNING ${columns}`,
  );
  const filter = `(@service IS NULL OR service = @service) AND (@who IS NULL OR who = @who) AND ${live}`;
  type Filter = { service: string | null; who: string | null } & Now;
  const page = db.prepare<[Filter & { limit: number; offset: number }], LockRow>(
    `SELECT ${columns}, ${waiting} FROM locks WHERE ${filter}
     ORDER BY created_at, id LIMIT @limit OFFSET @offset`,
  );
  const count = db.prepare<[Filter], { total: number }>(
    `SELECT count(*) AS total FROM locks WHERE ${filter}`,
  );
  const ping = db.prepare('SELECT 1');
  const stats = db.prepare<[Now], { locks: number; waiters: number }>(
    `SELECT (SELECT count(*) FROM locks WHERE ${live}) AS locks,
            (SELECT count(*) FROM waiters WHERE alive_until > @now) AS waiters`,
  );
  const all = db.prepare<[{ service: string | null } & Now], LockRow>(
    `SELECT ${columns}, ${waiting} FROM locks WHERE (@service IS NULL OR service = @service) AND ${live}
     ORDER BY created_at, id`,
  );
  const sweepExpired = db.prepare<[{ limit: number } & Now], LockRow>(
    `DELETE FROM locks WHERE id IN (
       SELECT id FROM locks WHERE expires_at <= @now ORDER BY expires_at LIMIT @limit)
     RETURNING ${columns}`,
  );
  // Waiters whose owner stopped its heartbeat: a grant skips them anyway; this drops those
  // of services nobody takes again (recorded as abandoned).
  const sweepWaiters = db.prepare<[{ limit: number } & Now]>(
    `DELETE FROM waiters WHERE ticket IN (
       SELECT ticket FROM waiters WHERE alive_until <= @now LIMIT @limit)`,
  );
  const eventsAfter = db.prepare<[{ after: number; limit: number }], EventRow>(
    'SELECT * FROM lock_events WHERE id > @after ORDER BY id LIMIT @limit',
  );
  const lastEventId = db.prepare<[], { seq: number }>(
    "SELECT seq FROM sqlite_sequence WHERE name = 'lock_events'",
  );
  const prunedThrough = db.prepare<[], { pruned_through: number }>(
    'SELECT pruned_through FROM history_state',
  );
  const pruneEvents = db.prepare<[{ cutoff: number; limit: number }], { id: number }>(
    `DELETE FROM lock_events WHERE id IN (
       SELECT id FROM lock_events WHERE at < @cutoff ORDER BY at LIMIT @limit)
     RETURNING id`,
  );
  const recordPruned = db.prepare<[{ through: number }]>(
    'UPDATE history_state SET pruned_through = max(pruned_through, @through)',
  );
  // One statement per combination of filters, prepared on first use, so that each uses the
  // index of its most selective filter (an `@x IS NULL OR` filter defeats the planner).
  const historyStatements = new Map<string, Database.Statement<[Record<string, unknown>], EventRow>>();
  const historyStatement = (query: HistoryQuery) => {
    const where = ['true'];
    if (query.service !== undefined) where.push('service = @service');
    if (query.who !== undefined) where.push('who = @who');
    if (query.since !== undefined) where.push('at >= @since');
    if (query.until !== undefined) where.push('at < @until');
    if (query.before !== undefined) where.push('id < @before');
    const sql = `SELECT * FROM lock_events WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT @limit`;
    let statement = historyStatements.get(sql);
    if (!statement) {
      statement = db.prepare<[Record<string, unknown>], EventRow>(sql);
      historyStatements.set(sql, statement);
    }
    return statement;
  };
  /** The store clock's reading for an operation; the history triggers see the same. */
  const now = () => {
    context.now = options.clock.now().getTime();
    return context.now;
  };

  const insertParams = (request: AcquireRequest, at: number): InsertParams => ({
    id: request.id,
    service: request.service,
    who: request.who,
    ttl: request.ttlSeconds,
    expires: request.ttlSeconds === null ? null : at + request.ttlSeconds * 1000,
    owner: request.owner ?? null,
    now: at,
  });
  const insertLock = (request: AcquireRequest, at: number): LockRow | undefined =>
    insert.all(insertParams(request, at))[0];
  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const announce = (service: string) => changes.emit('change', service);
  const withWaiters = (row: LockRow, at: number): Lock =>
    toLock({ ...row, waiters: countWaiters.get({ service: row.service, now: at })?.n ?? 0 });

  /**
   * Inside a write transaction, with nobody holding `service`: grants it to the oldest live
   * waiter, deleting dead waiters met on the way. Bounded by the queue's length.
   */
  const grantNext = (service: string, at: number): LockRow | undefined => {
    for (let head = headWaiter.get({ service }); head; head = headWaiter.get({ service })) {
      // A dead head is recorded as abandoned whatever the context says (see migration 004).
      context.dequeue = 'granted';
      try {
        deleteWaiter.run({ ticket: head.ticket });
      } finally {
        context.dequeue = null;
      }
      if (head.alive_until <= at) continue;
      const granted = insertLock(
        { id: head.lock_id, service, who: head.who, ttlSeconds: head.ttl_seconds, owner: head.lock_owner },
        at,
      );
      if (!granted) throw new Error(`service ${service} was not free when granting to waiter ${head.ticket}`);
      return granted;
    }
    return undefined;
  };
  const toWaiter = (row: WaiterRow, position: number): Waiter => ({
    ticket: row.ticket,
    service: row.service,
    who: row.who,
    since: new Date(row.since),
    position,
  });

  // After a conflict: one IMMEDIATE transaction, which holds the write lock (across
  // processes too), so removing an expired holder, granting to a waiter, the insert that
  // UNIQUE(service) decides, the holder read and joining the queue all see one state.
  const takeOverOrQueue = db.transaction(
    (request: AcquireRequest, queue: QueueRequest | undefined): AcquireResult & { changed: boolean } => {
      const at = now();
      const { service } = request;
      const expired = deleteExpired.run({ service, now: at }).changes > 0;
      // A free service goes to its oldest waiter first: a newcomer never overtakes.
      const granted = expired || !byService.get({ service, now: at }) ? grantNext(service, at) : undefined;
      if (!granted) {
        const created = insertLock(request, at);
        if (created) return { acquired: true, lock: withWaiters(created, at), changed: expired };
      }
      const holder = byService.get({ service, now: at });
      if (!holder)
        throw new Error(`insert of lock ${request.id} conflicted but no holder of ${service} exists`);
      const queueFull =
        queue?.maxWaiters !== undefined &&
        (countWaiters.get({ service, now: at })?.n ?? 0) >= queue.maxWaiters;
      const waiter =
        queue && !queueFull
          ? insertWaiter.all({
              service,
              who: request.who,
              ttl: request.ttlSeconds,
              lockId: request.id,
              lockOwner: request.owner ?? null,
              owner: queue.owner,
              now: at,
              aliveUntil: at + WAITER_LEASE_MS,
            })[0]
          : undefined;
      return {
        acquired: false,
        holder: toLock({ ...holder, waiters: (holder.waiters ?? 0) + (waiter ? 1 : 0) }),
        waiter: waiter
          ? toWaiter(waiter, (aheadOf.get({ service, ticket: waiter.ticket, now: at })?.n ?? 0) + 1)
          : null,
        changed: expired || granted !== undefined,
        ...(queueFull ? { queueFull } : {}),
      };
    },
  );
  // A free service costs one statement: the INSERT (with its trigger) is atomic on its own,
  // and a service with no holder row has no live waiters (they are granted or dropped
  // whenever the holder goes), so its new lock has none either.
  // RETURNING statements run with .all(), never .get(): .get() stops before SQLITE_DONE, so
  // the autocommit happens in sqlite3_reset, which skips the WAL auto-checkpoint; the WAL
  // then grows without bound (measured: 1.6 GB after a minute of load).
  const acquire = (request: AcquireRequest, queue: QueueRequest | undefined): AcquireResult => {
    const at = now();
    const created = insertUnlessQueued.all(insertParams(request, at))[0];
    if (created) return { acquired: true, lock: toLock({ ...created, waiters: 0 }) };
    const { changed, ...result } = takeOverOrQueue.immediate(request, queue);
    if (changed) announce(request.service);
    return result;
  };
  // A release is one statement; only when someone waits does a transaction follow to grant
  // the next. Nothing can take the service in between: newcomers leave a free service with
  // waiters to them (insertUnlessQueued), and any grant goes to the oldest live waiter.
  const release = (id: string, owner: string | null): Lock | null => {
    const at = now();
    const released = remove.all({ id, owner, now: at })[0];
    if (!released) return null;
    if (!headWaiter.get({ service: released.service })) return toLock({ ...released, waiters: 0 });
    const lock = withWaiters(released, at);
    settle.immediate(released.service);
    return lock;
  };
  const settle = db.transaction((service: string): Lock | null => {
    const at = now();
    deleteExpired.run({ service, now: at });
    if (byService.get({ service, now: at })) return null;
    const granted = grantNext(service, at);
    return granted ? withWaiters(granted, at) : null;
  });
  const forceRelease = db.transaction((id: string, reason: string | null): Lock | null => {
    const at = now();
    context.release = 'force-released';
    context.reason = reason;
    let released: LockRow | undefined;
    try {
      released = remove.all({ id, owner: null, now: at })[0];
    } finally {
      context.release = null;
      context.reason = null;
    }
    if (!released) return null;
    const lock = withWaiters(released, at);
    grantNext(released.service, at);
    return lock;
  });
  const sweep = db.transaction((limit: number) => {
    const at = now();
    const expired = sweepExpired.all({ limit, now: at });
    sweepWaiters.run({ limit, now: at });
    const granted: Lock[] = [];
    for (const service of new Set(expired.map((row) => row.service))) {
      if (byService.get({ service, now: at })) continue;
      const lock = grantNext(service, at);
      if (lock) granted.push(withWaiters(lock, at));
    }
    return { expired: expired.map(toLock), granted };
  });
  const prune = db.transaction((retentionMs: number, limit: number): number => {
    const ids = pruneEvents.all({ cutoff: now() - retentionMs, limit });
    if (ids.length > 0) recordPruned.run({ through: Math.max(...ids.map((row) => row.id)) });
    return ids.length;
  });
  const queue = db.transaction((service: string): Queue => {
    const at = now();
    const holder = byService.get({ service, now: at });
    const waiters = liveWaiters.all({ service, now: at });
    return {
      service,
      holder: holder ? toLock(holder) : null,
      waiters: waiters.map((row, index) => toWaiter(row, index + 1)),
    };
  });

  const list = db.transaction((request: ListRequest): LockPage => {
    const where = { service: request.service ?? null, who: request.who ?? null, now: now() };
    const rows = page.all({ ...where, limit: request.perPage, offset: (request.page - 1) * request.perPage });
    return { locks: rows.map(toLock), total: count.get(where)?.total ?? 0 };
  });

  return {
    acquire: async (request, queueRequest) => guard(() => acquire(request, queueRequest)),
    get: async (id) => guard(() => nullable(byId.get({ id, now: now() }))),
    release: async (id, owner) =>
      guard(() => {
        const lock = release(id, owner ?? null);
        if (lock) announce(lock.service);
        return lock;
      }),
    renew: async (id, ttlSeconds, owner) =>
      guard(() => {
        const at = now();
        const row = renew.all({ id, ttl: ttlSeconds, owner: owner ?? null, now: at })[0];
        return row ? withWaiters(row, at) : null;
      }),
    settle: async (service) =>
      guard(() => {
        const granted = settle.immediate(service);
        if (granted) announce(service);
        return granted;
      }),
    leave: async (ticket) =>
      guard(() => {
        const left = deleteWaiter.all({ ticket })[0];
        if (left) announce(left.service);
        return left !== undefined;
      }),
    heartbeat: async (owner) =>
      guard(() => void heartbeat.run({ owner, aliveUntil: now() + WAITER_LEASE_MS })),
    queue: async (service) => guard(() => queue.deferred(service)),
    onChange: (listener) => {
      changes.on('change', listener);
      return () => changes.off('change', listener);
    },
    list: async (request) => guard(() => list.deferred(request)),
    forceRelease: async (id, reason) =>
      guard(() => {
        const lock = forceRelease.immediate(id, reason);
        if (lock) announce(lock.service);
        return lock;
      }),
    sweep: async (limit) =>
      guard(() => {
        const result = sweep.immediate(limit);
        for (const lock of result.granted) announce(lock.service);
        return result;
      }),
    snapshot: async (service) => guard(() => all.all({ service: service ?? null, now: now() }).map(toLock)),
    eventCursor: async () => guard(() => lastEventId.get()?.seq ?? 0),
    readEvents: async (after, limit) => guard(() => eventsAfter.all({ after, limit }).map(toEvent)),
    history: async (query) =>
      guard(() =>
        historyStatement(query)
          .all(
            // better-sqlite3 binds only the parameters the statement names; undefined ones
            // are left out (the statement for this query names none of them).
            Object.fromEntries(
              Object.entries({
                service: query.service,
                who: query.who,
                since: query.since?.getTime(),
                until: query.until?.getTime(),
                before: query.before,
                limit: query.limit,
              }).filter(([, value]) => value !== undefined),
            ),
          )
          .map(toEvent),
      ),
    historyFloor: async () => guard(() => prunedThrough.get()?.pruned_through ?? 0),
    pruneHistory: async (retentionMs, limit) => guard(() => prune.immediate(retentionMs, limit)),
    stats: async () => guard(() => stats.get({ now: now() }) ?? { locks: 0, waiters: 0 }),
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
    waiters: row.waiters ?? 0,
    owner: row.owner,
  };
}

function toEvent(row: EventRow): LockEventRecord {
  return {
    id: row.id,
    type: row.type as LockEventType,
    at: new Date(row.at),
    lockId: row.lock_id,
    service: row.service,
    who: row.who,
    createdAt: new Date(row.created_at),
    ttlSeconds: row.ttl_seconds,
    expiresAt: row.expires_at === null ? null : new Date(row.expires_at),
    fencingToken: row.fencing_token,
    waiters: row.waiters,
    owner: row.owner,
    heldMs: row.held_ms,
    reason: row.reason,
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
