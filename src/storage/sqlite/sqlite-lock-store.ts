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
  type IdempotencyKey,
  type KeyRefusal,
  type LockStore,
  type OwnerMatch,
  type QueueRequest,
  WAITER_LEASE_MS,
} from '../../core/lock-store.js';
import { readMigrations } from '../migrations.js';
import { migrate } from './migrate.js';
import type { ByOwner, EventRow, Filter, InsertParams, KeyRow, LockRow, Now, WaiterRow } from './queries.js';
import * as sql from './queries.js';

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

/** Opens (creating and migrating if need be) the embedded store. */
export function openSqliteLockStore(options: SqliteStoreOptions): LockStore {
  return new SqliteLockStore(options);
}

/** The statements of one connection, prepared once (queries.ts holds their SQL). */
function prepare(db: Database.Database) {
  return {
    deleteExpired: db.prepare<[{ service: string } & Now]>(sql.DELETE_EXPIRED),
    insert: db.prepare<[InsertParams], LockRow>(sql.INSERT),
    insertUnlessQueued: db.prepare<[InsertParams], LockRow>(sql.INSERT_UNLESS_QUEUED),
    byService: db.prepare<[{ service: string } & Now], LockRow>(sql.BY_SERVICE),
    byId: db.prepare<[{ id: string } & Now], LockRow>(sql.BY_ID),
    countWaiters: db.prepare<[{ service: string } & Now], { n: number }>(sql.COUNT_WAITERS),
    headWaiter: db.prepare<[{ service: string }], WaiterRow>(sql.HEAD_WAITER),
    deleteWaiter: db.prepare<[{ ticket: number }], { service: string }>(sql.DELETE_WAITER),
    insertWaiter: db.prepare<
      [
        {
          service: string;
          who: string;
          ttl: number | null;
          lockId: string;
          lockOwner: string | null;
          lockOwnerKey: string | null;
          owner: string;
          aliveUntil: number;
        } & Now,
      ],
      WaiterRow
    >(sql.INSERT_WAITER),
    liveWaiters: db.prepare<[{ service: string } & Now], WaiterRow>(sql.LIVE_WAITERS),
    aheadOf: db.prepare<[{ service: string; ticket: number } & Now], { n: number }>(sql.AHEAD_OF),
    heartbeat: db.prepare<[{ owner: string; aliveUntil: number }]>(sql.HEARTBEAT),
    remove: db.prepare<[ByOwner], LockRow>(sql.REMOVE),
    renew: db.prepare<[ByOwner & { ttl: number | null }], LockRow>(sql.RENEW),
    page: db.prepare<[Filter & { limit: number; offset: number }], LockRow>(sql.PAGE),
    count: db.prepare<[Filter], { total: number }>(sql.COUNT),
    ping: db.prepare(sql.PING),
    stats: db.prepare<[Now], { locks: number; waiters: number }>(sql.STATS),
    snapshot: db.prepare<[{ service: string | null } & Now], LockRow>(sql.SNAPSHOT),
    snapshotPage: db.prepare<[{ after: string; limit: number } & Now], LockRow>(sql.SNAPSHOT_PAGE),
    snapshotPageOfService: db.prepare<[{ service: string; after: string } & Now], LockRow>(
      sql.SNAPSHOT_PAGE_OF_SERVICE,
    ),
    sweepExpired: db.prepare<[{ limit: number } & Now], LockRow>(sql.SWEEP_EXPIRED),
    sweepWaiters: db.prepare<[{ limit: number } & Now]>(sql.SWEEP_WAITERS),
    eventsAfter: db.prepare<[{ after: number; limit: number }], EventRow>(sql.EVENTS_AFTER),
    lastEventId: db.prepare<[], { seq: number }>(sql.LAST_EVENT_ID),
    prunedThrough: db.prepare<[], { pruned_through: number }>(sql.PRUNED_THROUGH),
    pruneEvents: db.prepare<[{ cutoff: number; limit: number }], { id: number }>(sql.PRUNE_EVENTS),
    recordPruned: db.prepare<[{ through: number }]>(sql.RECORD_PRUNED),
    keyByName: db.prepare<[{ scope: string; key: string }], KeyRow>(sql.KEY_BY_NAME),
    insertKey: db.prepare<
      [
        {
          scope: string;
          key: string;
          fingerprint: string;
          lockId: string;
          service: string;
          attempt: string;
        } & Now,
      ]
    >(sql.INSERT_KEY),
    keyAttempt: db.prepare<[{ scope: string; key: string; attempt: string }]>(sql.KEY_ATTEMPT),
    keyGranted: db.prepare<[{ lockId: string }]>(sql.KEY_GRANTED),
    rejoin: db.prepare<[{ lockId: string; owner: string; aliveUntil: number }], WaiterRow>(sql.REJOIN),
    leaveAs: db.prepare<[{ ticket: number; attempt: string }], { service: string }>(sql.LEAVE_AS),
    removeAs: db.prepare<[ByOwner & { attempt: string }], LockRow>(sql.REMOVE_AS),
    pruneKeys: db.prepare<[{ cutoff: number; limit: number }]>(sql.PRUNE_KEYS),
  };
}

/**
 * The embedded store: one SQLite file, shared safely by several processes on one host.
 * better-sqlite3 is synchronous, so each call runs to completion on the event loop; the
 * statements are prepared once and every transaction is a few statements long.
 */
export class SqliteLockStore implements LockStore {
  readonly #db: Database.Database;
  readonly #clock: Clock;
  readonly #context: StatementContext = { now: 0, release: null, reason: null, dequeue: null };
  readonly #statements: ReturnType<typeof prepare>;
  readonly #history = new Map<string, Database.Statement<[Record<string, unknown>], EventRow>>();
  readonly #changes = new EventEmitter();
  /** The multi-statement operations, each as one better-sqlite3 transaction. */
  readonly #tx: ReturnType<SqliteLockStore['transactions']>;

  constructor(options: SqliteStoreOptions) {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    this.#clock = options.clock;
    this.#db = new Database(options.path);
    const context = this.#context;
    try {
      // Registered before the migrations: the history triggers call them.
      this.#db.function('tracker_now', { deterministic: false }, () => context.now);
      this.#db.function('tracker_context', { deterministic: false }, (key: unknown) =>
        key === 'release' || key === 'reason' || key === 'dequeue' ? context[key] : null,
      );
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      this.#db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
      migrate(this.#db, readMigrations(MIGRATIONS));
      this.#statements = prepare(this.#db);
      this.#tx = this.transactions();
    } catch (error) {
      this.#db.close();
      throw error;
    }
    this.#changes.setMaxListeners(0);
  }

  private transactions() {
    const db = this.#db;
    return {
      takeOverOrQueue: db.transaction((request: AcquireRequest, queue: QueueRequest | undefined) =>
        this.#takeOverOrQueue(request, queue),
      ),
      acquireKeyed: db.transaction(
        (request: AcquireRequest, queue: QueueRequest | undefined, key: IdempotencyKey) =>
          this.#acquireKeyed(request, queue, key),
      ),
      settle: db.transaction((service: string) => this.#settle(service)),
      forceRelease: db.transaction((id: string, reason: string | null) => this.#forceRelease(id, reason)),
      sweep: db.transaction((limit: number) => this.#sweep(limit)),
      prune: db.transaction((retentionMs: number, limit: number) => this.#prune(retentionMs, limit)),
      queue: db.transaction((service: string) => this.#queue(service)),
      list: db.transaction((request: ListRequest) => this.#list(request)),
    };
  }

  /** The store clock's reading for an operation; the history triggers see the same. */
  #now(): number {
    this.#context.now = this.#clock.now().getTime();
    return this.#context.now;
  }

  #announce(service: string): void {
    this.#changes.emit('change', service);
  }

  #insertParams(request: AcquireRequest, at: number): InsertParams {
    return {
      id: request.id,
      service: request.service,
      who: request.who,
      ttl: request.ttlSeconds,
      expires: request.ttlSeconds === null ? null : at + request.ttlSeconds * 1000,
      owner: request.owner ?? null,
      ownerKey: request.ownerKey ?? null,
      now: at,
    };
  }

  #withWaiters(row: LockRow, at: number): Lock {
    return toLock({
      ...row,
      waiters: this.#statements.countWaiters.get({ service: row.service, now: at })?.n ?? 0,
    });
  }

  /**
   * Inside a write transaction, with nobody holding `service`: grants it to the oldest live
   * waiter, deleting dead waiters met on the way. Bounded by the queue's length.
   */
  #grantNext(service: string, at: number): LockRow | undefined {
    const { headWaiter, deleteWaiter, insert } = this.#statements;
    for (let head = headWaiter.get({ service }); head; head = headWaiter.get({ service })) {
      // A dead head is recorded as abandoned whatever the context says (see migration 004).
      this.#context.dequeue = 'granted';
      try {
        deleteWaiter.run({ ticket: head.ticket });
      } finally {
        this.#context.dequeue = null;
      }
      if (head.alive_until <= at) continue;
      const request = {
        id: head.lock_id,
        service,
        who: head.who,
        ttlSeconds: head.ttl_seconds,
        owner: head.lock_owner,
        ownerKey: head.lock_owner_key,
      };
      const granted = insert.all(this.#insertParams(request, at))[0];
      if (!granted) throw new Error(`service ${service} was not free when granting to waiter ${head.ticket}`);
      this.#statements.keyGranted.run({ lockId: granted.id });
      return granted;
    }
    return undefined;
  }

  /**
   * After a conflict: one IMMEDIATE transaction, which holds the write lock (across
   * processes too), so removing an expired holder, granting to a waiter, the insert that
   * UNIQUE(service) decides, the holder read and joining the queue all see one state.
   */
  #takeOverOrQueue(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
  ): AcquireResult & { changed: boolean } {
    const { deleteExpired, byService, insert, countWaiters, insertWaiter, aheadOf } = this.#statements;
    const at = this.#now();
    const { service } = request;
    const expired = deleteExpired.run({ service, now: at }).changes > 0;
    // A free service goes to its oldest waiter first: a newcomer never overtakes.
    const granted =
      expired || !byService.get({ service, now: at }) ? this.#grantNext(service, at) : undefined;
    if (!granted) {
      const created = insert.all(this.#insertParams(request, at))[0];
      if (created) return { acquired: true, lock: this.#withWaiters(created, at), changed: expired };
    }
    const holder = byService.get({ service, now: at });
    if (!holder)
      throw new Error(`insert of lock ${request.id} conflicted but no holder of ${service} exists`);
    const queueFull =
      queue?.maxWaiters !== undefined && (countWaiters.get({ service, now: at })?.n ?? 0) >= queue.maxWaiters;
    const waiter =
      queue && !queueFull
        ? insertWaiter.all({
            service,
            who: request.who,
            ttl: request.ttlSeconds,
            lockId: request.id,
            lockOwner: request.owner ?? null,
            lockOwnerKey: request.ownerKey ?? null,
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
  }

  /** An acquire inside a write transaction: the one-statement insert, else the takeover or the queue. */
  #acquireFresh(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
  ): AcquireResult & { changed: boolean } {
    const at = this.#now();
    const created = this.#statements.insertUnlessQueued.all(this.#insertParams(request, at))[0];
    if (created) return { acquired: true, lock: toLock({ ...created, waiters: 0 }), changed: false };
    return this.#takeOverOrQueue(request, queue);
  }

  /** An acquire with an idempotency key, in one IMMEDIATE transaction (see IdempotencyKey). */
  #acquireKeyed(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey,
  ): { changed: boolean } & (AcquireResult | KeyRefusal) {
    const statements = this.#statements;
    const at = this.#now();
    const row = statements.keyByName.get({ scope: key.scope, key: key.key });
    if (!row) {
      statements.insertKey.run({ ...key, lockId: request.id, service: request.service, now: at });
      const result = this.#acquireFresh(request, queue);
      if (result.acquired) statements.keyGranted.run({ lockId: request.id });
      return result;
    }
    if (row.fingerprint !== key.fingerprint) return { acquired: false, keyReused: true, changed: false };
    statements.keyAttempt.run({ scope: key.scope, key: key.key, attempt: key.attempt });
    const id = row.lock_id;
    const held = statements.byId.get({ id, now: at });
    if (held) return { acquired: true, lock: toLock(held), replayed: true, changed: false };
    const waiter = queue
      ? statements.rejoin.all({ lockId: id, owner: queue.owner, aliveUntil: at + WAITER_LEASE_MS })[0]
      : undefined;
    if (waiter) {
      // Still in line: the retry waits in the same place (granted first if its turn came).
      const granted = this.#settle(request.service);
      if (granted?.id === id) return { acquired: true, lock: granted, replayed: true, changed: true };
      const holder = statements.byService.get({ service: request.service, now: at });
      if (!holder) throw new Error(`waiter ${waiter.ticket} of ${request.service} waits for nobody`);
      const position =
        (statements.aheadOf.get({ service: request.service, ticket: waiter.ticket, now: at })?.n ?? 0) + 1;
      return {
        acquired: false,
        holder: toLock(holder),
        waiter: toWaiter(waiter, position),
        replayed: true,
        changed: granted !== null,
      };
    }
    if (row.granted) return { acquired: false, ended: { lockId: id }, changed: false };
    // The earlier request got nothing (refused, or it left the queue): a new acquire under its id.
    const result = this.#acquireFresh({ ...request, id }, queue);
    if (result.acquired) statements.keyGranted.run({ lockId: id });
    return result;
  }

  /** With nobody holding `service` (an expired holder is deleted): grants it to the oldest live waiter. */
  #settle(service: string): Lock | null {
    const at = this.#now();
    this.#statements.deleteExpired.run({ service, now: at });
    if (this.#statements.byService.get({ service, now: at })) return null;
    const granted = this.#grantNext(service, at);
    return granted ? this.#withWaiters(granted, at) : null;
  }

  #forceRelease(id: string, reason: string | null): Lock | null {
    const at = this.#now();
    this.#context.release = 'force-released';
    this.#context.reason = reason;
    let released: LockRow | undefined;
    try {
      released = this.#statements.remove.all({ id, ...ANY_OWNER, now: at })[0];
    } finally {
      this.#context.release = null;
      this.#context.reason = null;
    }
    if (!released) return null;
    const lock = this.#withWaiters(released, at);
    this.#grantNext(released.service, at);
    return lock;
  }

  #sweep(limit: number): { expired: Lock[]; granted: Lock[] } {
    const at = this.#now();
    const expired = this.#statements.sweepExpired.all({ limit, now: at });
    this.#statements.sweepWaiters.run({ limit, now: at });
    const granted: Lock[] = [];
    for (const service of new Set(expired.map((row) => row.service))) {
      if (this.#statements.byService.get({ service, now: at })) continue;
      const lock = this.#grantNext(service, at);
      if (lock) granted.push(this.#withWaiters(lock, at));
    }
    return { expired: expired.map(toLock), granted };
  }

  #prune(retentionMs: number, limit: number): number {
    const ids = this.#statements.pruneEvents.all({ cutoff: this.#now() - retentionMs, limit });
    if (ids.length > 0) this.#statements.recordPruned.run({ through: Math.max(...ids.map((row) => row.id)) });
    return ids.length;
  }

  #queue(service: string): Queue {
    const at = this.#now();
    const holder = this.#statements.byService.get({ service, now: at });
    const waiters = this.#statements.liveWaiters.all({ service, now: at });
    return {
      service,
      holder: holder ? toLock(holder) : null,
      waiters: waiters.map((row, index) => toWaiter(row, index + 1)),
    };
  }

  #list(request: ListRequest): LockPage {
    const where = { service: request.service ?? null, who: request.who ?? null, now: this.#now() };
    const rows = this.#statements.page.all({
      ...where,
      limit: request.perPage,
      offset: (request.page - 1) * request.perPage,
    });
    return { locks: rows.map(toLock), total: this.#statements.count.get(where)?.total ?? 0 };
  }

  async acquire(request: AcquireRequest, queue?: QueueRequest): Promise<AcquireResult>;
  async acquire(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey | undefined,
  ): Promise<AcquireResult | KeyRefusal>;
  async acquire(
    request: AcquireRequest,
    queue?: QueueRequest,
    key?: IdempotencyKey,
  ): Promise<AcquireResult | KeyRefusal> {
    if (key) {
      return guard(() => {
        const { changed, ...result } = this.#tx.acquireKeyed.immediate(request, queue, key);
        if (changed) this.#announce(request.service);
        return result as AcquireResult;
      });
    }
    return guard(() => {
      // A free service costs one statement: the INSERT (with its trigger) is atomic on its
      // own, and a service with no holder row has no live waiters (they are granted or
      // dropped whenever the holder goes), so its new lock has none either.
      const at = this.#now();
      const created = this.#statements.insertUnlessQueued.all(this.#insertParams(request, at))[0];
      if (created) return { acquired: true, lock: toLock({ ...created, waiters: 0 }) };
      const { changed, ...result } = this.#tx.takeOverOrQueue.immediate(request, queue);
      if (changed) this.#announce(request.service);
      return result;
    });
  }

  async get(id: string): Promise<Lock | null> {
    return guard(() => nullable(this.#statements.byId.get({ id, now: this.#now() })));
  }

  /**
   * A release is one statement; only when someone waits does a transaction follow to grant
   * the next. Nothing can take the service in between: newcomers leave a free service with
   * waiters to them (INSERT_UNLESS_QUEUED), and any grant goes to the oldest live waiter.
   */
  async release(id: string, owner?: OwnerMatch, attempt?: string): Promise<Lock | null> {
    return guard(() => {
      const at = this.#now();
      const params = { id, ...byOwner(owner), now: at };
      const released = (
        attempt === undefined
          ? this.#statements.remove.all(params)
          : this.#statements.removeAs.all({ ...params, attempt })
      )[0];
      if (!released) return null;
      let lock: Lock;
      if (!this.#statements.headWaiter.get({ service: released.service })) {
        lock = toLock({ ...released, waiters: 0 });
      } else {
        lock = this.#withWaiters(released, at);
        this.#tx.settle.immediate(released.service);
      }
      this.#announce(lock.service);
      return lock;
    });
  }

  async renew(id: string, ttlSeconds: number | null, owner?: OwnerMatch): Promise<Lock | null> {
    return guard(() => {
      const at = this.#now();
      const row = this.#statements.renew.all({ id, ttl: ttlSeconds, ...byOwner(owner), now: at })[0];
      return row ? this.#withWaiters(row, at) : null;
    });
  }

  async settle(service: string): Promise<Lock | null> {
    return guard(() => {
      const granted = this.#tx.settle.immediate(service);
      if (granted) this.#announce(service);
      return granted;
    });
  }

  async leave(ticket: number, attempt?: string): Promise<boolean> {
    return guard(() => {
      const left = (
        attempt === undefined
          ? this.#statements.deleteWaiter.all({ ticket })
          : this.#statements.leaveAs.all({ ticket, attempt })
      )[0];
      if (left) this.#announce(left.service);
      return left !== undefined;
    });
  }

  async heartbeat(owner: string): Promise<void> {
    guard(() => void this.#statements.heartbeat.run({ owner, aliveUntil: this.#now() + WAITER_LEASE_MS }));
  }

  async queue(service: string): Promise<Queue> {
    return guard(() => this.#tx.queue.deferred(service));
  }

  onChange(listener: (service: string) => void): () => void {
    this.#changes.on('change', listener);
    return () => this.#changes.off('change', listener);
  }

  async list(request: ListRequest): Promise<LockPage> {
    return guard(() => this.#tx.list.deferred(request));
  }

  async forceRelease(id: string, reason: string | null): Promise<Lock | null> {
    return guard(() => {
      const lock = this.#tx.forceRelease.immediate(id, reason);
      if (lock) this.#announce(lock.service);
      return lock;
    });
  }

  async sweep(limit: number): Promise<{ expired: Lock[]; granted: Lock[] }> {
    return guard(() => {
      const result = this.#tx.sweep.immediate(limit);
      for (const lock of result.granted) this.#announce(lock.service);
      return result;
    });
  }

  async snapshotPage({
    service,
    after,
    limit,
  }: {
    service?: string | undefined;
    after: string;
    limit: number;
  }): Promise<Lock[]> {
    return guard(() => {
      const now = this.#now();
      const rows =
        service === undefined
          ? this.#statements.snapshotPage.all({ after, limit, now })
          : this.#statements.snapshotPageOfService.all({ service, after, now });
      return rows.map(toLock);
    });
  }

  async snapshot(service?: string): Promise<Lock[]> {
    return guard(() =>
      this.#statements.snapshot.all({ service: service ?? null, now: this.#now() }).map(toLock),
    );
  }

  async eventCursor(): Promise<number> {
    return guard(() => this.#statements.lastEventId.get()?.seq ?? 0);
  }

  async readEvents(after: number, limit: number): Promise<LockEventRecord[]> {
    return guard(() => this.#statements.eventsAfter.all({ after, limit }).map(toEvent));
  }

  async history(query: HistoryQuery): Promise<LockEventRecord[]> {
    return guard(() => {
      const text = sql.historySql({
        service: query.service !== undefined,
        who: query.who !== undefined,
        since: query.since !== undefined,
        until: query.until !== undefined,
        before: query.before !== undefined,
      });
      let statement = this.#history.get(text);
      if (!statement) {
        statement = this.#db.prepare<[Record<string, unknown>], EventRow>(text);
        this.#history.set(text, statement);
      }
      // better-sqlite3 binds only the parameters the statement names: undefined ones are
      // left out (the statement for this query names none of them).
      const values = Object.fromEntries(
        Object.entries({
          service: query.service,
          who: query.who,
          since: query.since?.getTime(),
          until: query.until?.getTime(),
          before: query.before,
          limit: query.limit,
        }).filter(([, value]) => value !== undefined),
      );
      return statement.all(values).map(toEvent);
    });
  }

  async historyFloor(): Promise<number> {
    return guard(() => this.#statements.prunedThrough.get()?.pruned_through ?? 0);
  }

  async pruneHistory(retentionMs: number, limit: number): Promise<number> {
    return guard(() => this.#tx.prune.immediate(retentionMs, limit));
  }

  async pruneIdempotencyKeys(retentionMs: number, limit: number): Promise<number> {
    return guard(() => this.#statements.pruneKeys.run({ cutoff: this.#now() - retentionMs, limit }).changes);
  }

  async stats(): Promise<{ locks: number; waiters: number }> {
    return guard(() => this.#statements.stats.get({ now: this.#now() }) ?? { locks: 0, waiters: 0 });
  }

  async ping(): Promise<void> {
    guard(() => void this.#statements.ping.get());
  }

  async close(): Promise<void> {
    this.#db.close();
  }
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

function toWaiter(row: WaiterRow, position: number): Waiter {
  return {
    ticket: row.ticket,
    lockId: row.lock_id,
    service: row.service,
    who: row.who,
    since: new Date(row.since),
    position,
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

const ANY_OWNER = { ownerKey: null, ownerName: null } as const;

/** The ownership parameters of a release or renewal (ByOwner). */
function byOwner(owner: OwnerMatch | undefined): { ownerKey: string | null; ownerName: string | null } {
  return owner ? { ownerKey: owner.key, ownerName: owner.name } : ANY_OWNER;
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
