import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Clock } from '../../core/clock.js';
import { storeUnavailable } from '../../core/errors.js';
import {
  decide,
  everGrantable,
  type Grant,
  limitMismatch,
  type PendingRequest,
  type ResourceView,
} from '../../core/grants.js';
import {
  type AcquireRequest,
  type Claim,
  claimsOf,
  type HistoryQuery,
  type ListRequest,
  type Lock,
  type LockEventRecord,
  type LockEventType,
  type LockMode,
  type LockPage,
  type Queue,
  type Resource,
  type ResourceRef,
  type ResourceSpec,
  stolenByOf,
  type Waiter,
} from '../../core/lock.js';
import {
  type AcquireResult,
  type IdempotencyKey,
  type KeyRefusal,
  type LockStore,
  type OwnerMatch,
  type QueueRequest,
  type StealRequest,
  WAITER_LEASE_MS,
} from '../../core/lock-store.js';
import type { WebhookStore } from '../../core/webhooks.js';
import { readMigrations } from '../migrations.js';
import { BACKSTOP_FRAMES, type Checkpointer, startCheckpointer } from './checkpointer.js';
import { migrate } from './migrate.js';
import type {
  ByOwner,
  ClaimRow,
  EventRow,
  Filter,
  InsertParams,
  KeyRow,
  LockRow,
  Now,
  ResourceRow,
  WaiterRow,
} from './queries.js';
import * as sql from './queries.js';
import { sqliteWebhooks } from './webhooks.js';

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
  /**
   * Checkpoints the WAL from a worker thread with its own connection (default: on for a
   * file), so that no request pays for one. Off: SQLite's automatic checkpoint, run by
   * whichever commit crosses 1000 pages of WAL.
   */
  readonly checkpointer?: boolean;
}

/** Batches a store commits before its WAL checkpoints move to a worker thread. */
const CHECKPOINTER_AFTER = 200;

/** A write waiting for the group commit of its event-loop turn (see SqliteLockStore#flush). */
interface PendingWrite {
  readonly work: () => unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * What the operation running now tells the history triggers (migration 004), through the
 * SQL functions tracker_now() and tracker_context(key). better-sqlite3 runs each operation
 * to completion on the event loop, so one object per connection is never shared by two.
 */
interface StatementContext {
  /** The store clock's reading for the operation, in unix ms: the @now of its statements. */
  now: number;
  /** 'force-released' during a force release, 'stolen' during a steal. */
  release: string | null;
  /** The force release's (or the steal's) reason. */
  reason: string | null;
  /** 'granted' while the queue's head is being granted. */
  dequeue: string | null;
  /** A steal's new lock: its id, holder and token name. */
  by_lock_id: string | null;
  by_who: string | null;
  by_owner: string | null;
}

/** A statement's context outside any force release, steal or grant. */
const NO_CONTEXT: Omit<StatementContext, 'now'> = {
  release: null,
  reason: null,
  dequeue: null,
  by_lock_id: null,
  by_who: null,
  by_owner: null,
};

/** What tracker_context(key) may read: the context's keys. */
const CONTEXT_KEYS = new Set(Object.keys(NO_CONTEXT));

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
    insertFree: db.prepare<[Omit<InsertParams, 'groupId' | 'member'>], LockRow>(sql.INSERT_FREE),
    mayGrant: db.prepare<[{ service: string }], { may: number }>(sql.MAY_GRANT),
    holders: db.prepare<
      [{ service: string }],
      { mode: string; max_holders: number; expires_at: number | null }
    >(sql.HOLDERS),
    naming: db.prepare<[{ service: string }], { ticket: number }>(sql.NAMING),
    holderLocks: db.prepare<[{ service: string } & Now], LockRow>(sql.HOLDER_LOCKS),
    resource: db.prepare<[{ name: string }], ResourceRow>(sql.RESOURCE),
    labelMembers: db.prepare<[{ label: string }], { name: string }>(sql.LABEL_MEMBERS),
    touching: db.prepare<[{ service: string }], { ticket: number }>(sql.TOUCHING),
    waiter: db.prepare<[{ ticket: number }], WaiterRow>(sql.WAITER),
    claims: db.prepare<[{ ticket: number }], ClaimRow>(sql.CLAIMS),
    insertClaim: db.prepare<
      [
        {
          ticket: number;
          idx: number;
          service: string | null;
          label: string | null;
          mode: string;
          limit: number | null;
          quantity: number;
        },
      ]
    >(sql.INSERT_CLAIM),
    granted: db.prepare<[{ id: string } & Now], LockRow>(sql.GRANTED),
    groupLocks: db.prepare<[{ id: string } & Now], LockRow & { owner_key: string | null }>(sql.GROUP_LOCKS),
    removeAny: db.prepare<[{ id: string }], LockRow>(sql.REMOVE_ANY),
    renewAny: db.prepare<[{ id: string; ttl: number | null } & Now], { id: string }>(sql.RENEW_ANY),
    upsertResource: db.prepare<
      [
        {
          name: string;
          labels: string;
          properties: string;
          capacity: number;
          description: string | null;
          source: string;
        },
      ]
    >(sql.UPSERT_RESOURCE),
    deleteResource: db.prepare<[{ name: string }]>(sql.DELETE_RESOURCE),
    setLimit: db.prepare<[{ service: string; limit: number }]>(sql.SET_LIMIT),
    deleteResourceLabels: db.prepare<[{ name: string }]>(sql.DELETE_RESOURCE_LABELS),
    insertResourceLabel: db.prepare<[{ label: string; name: string }]>(sql.INSERT_RESOURCE_LABEL),
    allResources: db.prepare<[], ResourceRow>(sql.ALL_RESOURCES),
    resourcesWithLabel: db.prepare<[{ label: string }], ResourceRow>(sql.RESOURCES_WITH_LABEL),
    fileResources: db.prepare<[], { name: string }>(sql.FILE_RESOURCES),
    isHeld: db.prepare<[{ service: string } & Now], { held: number }>(sql.IS_HELD),
    byId: db.prepare<[{ id: string } & Now], LockRow>(sql.BY_ID),
    countWaiters: db.prepare<[{ service: string } & Now], { n: number }>(sql.COUNT_WAITERS),
    deleteWaiter: db.prepare<[{ ticket: number }], { ticket: number }>(sql.DELETE_WAITER),
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
          priority: number;
          isGroup: number;
          label: string | null;
          mode: string;
          note: string | null;
          link: string | null;
        } & Now,
      ],
      WaiterRow
    >(sql.INSERT_WAITER),
    liveWaiters: db.prepare<[{ service: string } & Now], WaiterRow>(sql.LIVE_WAITERS),
    aheadOf: db.prepare<[{ service: string; ticket: number; priority: number } & Now], { n: number }>(
      sql.AHEAD_OF,
    ),
    heartbeat: db.prepare<[{ owner: string; aliveUntil: number }]>(sql.HEARTBEAT),
    remove: db.prepare<[ByOwner], LockRow>(sql.REMOVE),
    renew: db.prepare<[ByOwner & { ttl: number | null }], LockRow>(sql.RENEW),
    setNote: db.prepare<[ByOwner & { note: string | null }], LockRow>(sql.SET_NOTE),
    // Indexed by (service given ? 2 : 0) + (who given ? 1 : 0).
    lists: [false, true].flatMap((service) =>
      [false, true].map((who) => {
        const text = sql.listSql({ service, who });
        return {
          page: db.prepare<[Filter & { limit: number; offset: number }], LockRow>(text.page),
          count: db.prepare<[Filter], { total: number }>(text.count),
        };
      }),
    ),
    ping: db.prepare(sql.PING),
    stats: db.prepare<[Now], { locks: number; waiters: number }>(sql.STATS),
    snapshot: db.prepare<[{ service: string | null } & Now], LockRow>(sql.SNAPSHOT),
    snapshotPage: db.prepare<[{ after: string; limit: number } & Now], LockRow>(sql.SNAPSHOT_PAGE),
    snapshotPageOfService: db.prepare<[{ service: string; after: string; limit: number } & Now], LockRow>(
      sql.SNAPSHOT_PAGE_OF_SERVICE,
    ),
    sweepExpired: db.prepare<[{ limit: number } & Now], LockRow>(sql.SWEEP_EXPIRED),
    deadWaiters: db.prepare<[{ limit: number } & Now], { ticket: number }>(sql.DEAD_WAITERS),
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
    leaveAs: db.prepare<[{ ticket: number; attempt: string }], { ticket: number }>(sql.LEAVE_AS),
    removeAs: db.prepare<[ByOwner & { attempt: string }], LockRow>(sql.REMOVE_AS),
    pruneKeys: db.prepare<[{ cutoff: number; limit: number }]>(sql.PRUNE_KEYS),
  };
}

/** A request the grant pass considers: a waiter's row and claims, or the arriving request. */
interface Candidate {
  readonly pending: PendingRequest;
  /** The waiter's row; undefined for the arriving request. */
  readonly row?: WaiterRow;
  readonly request: {
    readonly id: string;
    readonly who: string;
    readonly ttlSeconds: number | null;
    readonly owner: string | null;
    readonly ownerKey: string | null;
    readonly group: boolean;
    readonly note: string | null;
    readonly link: string | null;
    /** It may have an idempotency key (whose row is marked granted with it). */
    readonly keyed: boolean;
  };
}

/** What a grant pass read: the resources involved and the requests touching them. */
interface World {
  readonly resources: Map<string, ResourceView>;
  readonly registry: Map<string, ResourceRow | null>;
  readonly candidates: Candidate[];
}

/**
 * The embedded store: one SQLite file, shared safely by several processes on one host.
 * better-sqlite3 is synchronous, so each call runs to completion on the event loop; the
 * statements are prepared once. Every change that may grant runs in one IMMEDIATE
 * transaction (the file's write lock, across processes): it reads the holders and the queue
 * of what it touches, decides with core/grants.ts and writes the grants, so the decision and
 * its writes are one atomic step.
 */
export class SqliteLockStore implements LockStore {
  readonly #db: Database.Database;
  readonly #clock: Clock;
  readonly #context: StatementContext = { now: 0, ...NO_CONTEXT };
  readonly #statements: ReturnType<typeof prepare>;
  /** The webhooks (webhooks.ts): plain statements on this connection. */
  readonly webhooks: WebhookStore;
  readonly #history = new Map<string, Database.Statement<[Record<string, unknown>], EventRow>>();
  readonly #changes = new EventEmitter();
  /** Services changed by the transaction running now, announced after it commits. */
  #changed = new Set<string>();
  /**
   * Runs its argument in a transaction, or in a savepoint when one is open (made once:
   * better-sqlite3's wrapper is costly to build).
   */
  readonly #transaction: Database.Transaction<(work: () => unknown) => unknown>;
  readonly #begin: Database.Statement;
  readonly #commit: Database.Statement;
  readonly #rollback: Database.Statement;
  /** Writes asked in this event-loop turn, committed together (see #flush). */
  #pending: PendingWrite[] = [];
  /** The checkpointer restarts the WAL: writes wait (see checkpointer.ts). */
  #held = false;
  /** The file the checkpointer works on; null: none (`:memory:`, or turned off). */
  readonly #checkpointerPath: string | null;
  #checkpointer: Checkpointer | null = null;
  /** Batches committed before the checkpointer starts. */
  #commits = 0;

  constructor(options: SqliteStoreOptions) {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    this.#clock = options.clock;
    this.#db = new Database(options.path);
    const context = this.#context;
    try {
      // Registered before the migrations: the history triggers call them.
      this.#db.function('tracker_now', { deterministic: false }, () => context.now);
      this.#db.function('tracker_context', { deterministic: false }, (key: unknown) =>
        typeof key === 'string' && CONTEXT_KEYS.has(key)
          ? context[key as keyof Omit<StatementContext, 'now'>]
          : null,
      );
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      this.#db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
      // The WAL file is cut back to 4 MiB whenever a checkpoint lets it start over.
      this.#db.pragma('journal_size_limit = 4194304');
      migrate(this.#db, readMigrations(MIGRATIONS));
      // Whatever the schema declares is enforced (SQLite leaves foreign keys off by default);
      // a deferred one is checked at COMMIT, which then fails as a whole (see #flush).
      this.#db.pragma('foreign_keys = ON');
      this.#statements = prepare(this.#db);
      this.webhooks = sqliteWebhooks(this.#db, () => this.#now(), guard);
      this.#transaction = this.#db.transaction((work: () => unknown) => work());
      this.#begin = this.#db.prepare('BEGIN IMMEDIATE');
      this.#commit = this.#db.prepare('COMMIT');
      this.#rollback = this.#db.prepare('ROLLBACK');
      // The checkpointer starts with the store's first writes in number (see #flush).
      this.#checkpointerPath =
        options.path !== ':memory:' && options.checkpointer !== false ? options.path : null;
    } catch (error) {
      this.#db.close();
      throw error;
    }
    this.#changes.setMaxListeners(0);
  }

  /**
   * Group commit: runs `work` with the other writes asked in the same event-loop turn, in one
   * IMMEDIATE transaction, each in a savepoint of its own (see #flush). Resolves with its
   * result once that transaction committed, then announces the services it changed.
   */
  #write<T>(work: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.#pending.length === 0 && !this.#held) setImmediate(this.#flush);
      this.#pending.push({ work, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /**
   * Commits the turn's writes: one BEGIN IMMEDIATE … COMMIT, one savepoint per write, so a
   * write that fails is undone alone and answered with its error while the others go on.
   * Nothing is answered before the COMMIT; a failed COMMIT (or a transaction SQLite rolled
   * back under a write, on a full disk or an I/O error) fails every write of the batch with
   * STORE_UNAVAILABLE, and none of it is visible. A lone write waits for no company: the
   * batch is whatever was asked before the loop came round (setImmediate), no timer.
   */
  readonly #flush = (): void => {
    if (this.#held) return;
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length === 0) return;
    const results: { ok: boolean; value: unknown }[] = [];
    const changed = new Set<string>();
    let failure: unknown = null;
    try {
      guard(() => this.#begin.run());
      // A write alone needs no savepoint: if it fails, the transaction is rolled back whole.
      const alone = batch.length === 1;
      for (const write of batch) {
        this.#changed = new Set();
        try {
          results.push({ ok: true, value: guard(alone ? write.work : () => this.#transaction(write.work)) });
          for (const service of this.#changed) changed.add(service);
        } catch (error) {
          results.push({ ok: false, value: error });
          // Alone, it ran without a savepoint: undo it with the transaction, and answer its error.
          if (alone) {
            if (this.#db.inTransaction) this.#rollback.run();
            break;
          }
        }
        if (!this.#db.inTransaction) throw storeUnavailable(new Error('SQLite rolled the batch back'));
      }
      try {
        if (this.#db.inTransaction) this.#commit.run();
      } catch (error) {
        if (this.#db.inTransaction) this.#rollback.run();
        throw storeUnavailable(error);
      }
    } catch (error) {
      // A busy file at BEGIN is STORE_UNAVAILABLE (guard); a closed store is a bug (500).
      failure = error;
      if (this.#db.open && this.#db.inTransaction) this.#rollback.run();
    } finally {
      this.#changed = new Set();
    }
    if (failure !== null) {
      for (const write of batch) write.reject(failure);
      return;
    }
    if (
      this.#checkpointer === null &&
      this.#checkpointerPath !== null &&
      ++this.#commits >= CHECKPOINTER_AFTER
    ) {
      this.#startCheckpointer(this.#checkpointerPath);
    }
    for (const service of changed) this.#changes.emit('change', service);
    for (const [index, write] of batch.entries()) {
      const result = results[index];
      if (result?.ok) write.resolve(result.value);
      else write.reject(result?.value);
    }
  };

  /**
   * Moves the WAL's checkpoints to a worker thread (checkpointer.ts) and moves SQLite's own
   * automatic checkpoint out to BACKSTOP_FRAMES, where it only runs if the worker falls
   * behind (a commit then pays for a checkpoint, and the WAL stays bounded). Started once
   * the store has committed CHECKPOINTER_AFTER batches: a store that writes little (a CLI, a
   * test) never pays for a thread, and until then the automatic checkpoint (every 1000
   * pages) keeps the WAL short.
   */
  #startCheckpointer(path: string): void {
    const db = this.#db;
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_FRAMES}`);
    this.#checkpointer = startCheckpointer(path, {
      hold: () => {
        this.#held = true;
      },
      resume: () => {
        this.#held = false;
        if (this.#pending.length > 0) setImmediate(this.#flush);
      },
      // Should the worker ever stop, the commits checkpoint again themselves.
      lost: () => void (db.open && db.pragma('wal_autocheckpoint = 1000')),
    });
  }

  /** Whether the WAL's checkpoints run in the worker thread yet (see #startCheckpointer). */
  get checkpointing(): boolean {
    return this.#checkpointer !== null;
  }

  /** Runs read-only `work` in one DEFERRED transaction (a consistent view), now. */
  #consistently<T>(work: () => T): T {
    return guard(() => this.#transaction.deferred(work) as T);
  }

  /** The store clock's reading for an operation; the history triggers see the same. */
  #now(): number {
    this.#context.now = this.#clock.now().getTime();
    return this.#context.now;
  }

  #withContext<T>(context: Partial<Omit<StatementContext, 'now'>>, work: () => T): T {
    Object.assign(this.#context, context);
    try {
      return work();
    } finally {
      Object.assign(this.#context, NO_CONTEXT);
    }
  }

  /** A held lock as the API shows it (its waiters counted, its resource read). */
  #lock(id: string, at: number): Lock {
    const row = this.#statements.byId.get({ id, now: at });
    if (!row) throw new Error(`lock ${id} was just written but cannot be read`);
    return toLock(row);
  }

  // --- The grant pass -------------------------------------------------------------------

  /**
   * Reads what a decision about `names` needs: those resources (their expired holders
   * deleted first), the waiters touching them with all their claims, and the resources
   * those claims can use (whose other waiters only block). Everything read belongs to the
   * running IMMEDIATE transaction.
   */
  #read(names: Iterable<string>, at: number): World {
    const s = this.#statements;
    const resources = new Map<string, ResourceView>();
    const registry = new Map<string, ResourceRow | null>();
    const load = (name: string) => {
      if (resources.has(name)) return;
      const rows = s.holders.all({ service: name });
      const live = rows.filter((holder) => holder.expires_at === null || holder.expires_at > at);
      if (live.length < rows.length) {
        // Expired holders go now (recorded as expired): what takes their place comes after.
        s.deleteExpired.run({ service: name, now: at });
        this.#changed.add(name);
      }
      const row = s.resource.get({ name }) ?? null;
      registry.set(name, row);
      resources.set(name, {
        name,
        capacity: row ? row.capacity : null,
        labels: row ? (JSON.parse(row.labels) as string[]) : [],
        releasedAt: row ? row.released_at : 0,
        holders: live.map((holder) => ({ mode: holder.mode as LockMode, limit: holder.max_holders })),
      });
    };
    const claimNames = (claims: readonly Claim[]) =>
      claims.flatMap((claim) =>
        claim.service !== null
          ? [claim.service]
          : s.labelMembers.all({ label: claim.label ?? '' }).map((member) => member.name),
      );
    const tickets = (of: Iterable<string>) => {
      const found = new Set<number>();
      for (const name of of) {
        const statement = registry.get(name) ? s.touching : s.naming;
        for (const { ticket } of statement.all({ service: name })) found.add(ticket);
      }
      return found;
    };
    const candidates = new Map<number, Candidate>();
    const readWaiter = (ticket: number): Candidate | undefined => {
      if (candidates.has(ticket)) return undefined;
      const row = s.waiter.get({ ticket });
      if (!row || row.alive_until <= at) return undefined;
      const claims = s.claims.all({ ticket }).map(toClaim);
      const candidate: Candidate = {
        row,
        pending: { key: row.lock_id, priority: row.priority, ticket, claims, grantable: true },
        request: {
          id: row.lock_id,
          who: row.who,
          ttlSeconds: row.ttl_seconds,
          owner: row.lock_owner,
          ownerKey: row.lock_owner_key,
          group: row.is_group === 1,
          note: row.note,
          link: row.link,
          keyed: true,
        },
      };
      candidates.set(ticket, candidate);
      return candidate;
    };
    // The whole connected part of the queue: the services, the waiters touching any of them,
    // the services those waiters can use, and so on. Who may block whom is then known
    // exactly; requests outside it share nothing with it.
    const pending = [...names];
    for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
      if (resources.has(name)) continue;
      load(name);
      for (const ticket of tickets([name])) {
        const candidate = readWaiter(ticket);
        if (!candidate) continue;
        for (const other of claimNames(candidate.pending.claims))
          if (!resources.has(other)) pending.push(other);
      }
    }
    return { resources, registry, candidates: [...candidates.values()] };
  }

  /** Writes a grant: a lock per pick, the waiter out of line (as granted), its key marked. */
  #apply(grant: Grant, candidate: Candidate, at: number): LockRow[] {
    const s = this.#statements;
    const { request } = candidate;
    if (candidate.row) {
      const ticket = candidate.row.ticket;
      this.#withContext({ dequeue: 'granted' }, () => s.deleteWaiter.run({ ticket }));
    }
    const rows = grant.picks.map((pick, member) => {
      const id = request.group ? randomUUID() : request.id;
      const row = s.insert.all({
        id,
        service: pick.service,
        who: request.who,
        ttl: request.ttlSeconds,
        expires: request.ttlSeconds === null ? null : at + request.ttlSeconds * 1000,
        owner: request.owner,
        ownerKey: request.ownerKey,
        limit: pick.limit,
        mode: pick.mode,
        groupId: request.group ? request.id : null,
        member,
        note: request.note,
        link: request.link,
        now: at,
      })[0];
      if (!row) throw new Error(`lock ${id} of ${pick.service} was not written`);
      this.#changed.add(pick.service);
      return row;
    });
    if (request.keyed) s.keyGranted.run({ lockId: request.id });
    return rows;
  }

  /**
   * Grants, in grant order, what the services in `names` (and what their waiters need) can
   * give now. With `arriving`, the new request takes its place after every waiter of its
   * priority; returns its lock ids if it was granted.
   */
  #pass(
    names: Iterable<string>,
    at: number,
    arriving?: Candidate,
    check?: (world: World) => KeyRefusal | null,
  ): {
    granted: Lock[][];
    mine: Lock[] | null;
    refusal: KeyRefusal | null;
    /** Every service the pass read. */
    names: string[];
    /** What each request the pass did not grant waits for. */
    waitingFor: ReadonlyMap<string, readonly string[]>;
    /** A lock of a service the pass read, as the API shows it after the pass. */
    present: (row: LockRow) => Lock;
  } {
    const world = this.#read(arriving ? [...names, ...this.#claimNames(arriving.pending.claims)] : names, at);
    const done = new Set<string>();
    const present = (row: LockRow): Lock => {
      if (!world.resources.has(row.service)) return this.#lock(row.id, at);
      let waiters = 0;
      for (const candidate of world.candidates) {
        if (done.has(candidate.pending.key)) continue;
        if (candidate.pending.claims.some((claim) => claim.service === row.service)) waiters++;
      }
      const resource = world.registry.get(row.service);
      return toLock({
        ...row,
        waiters,
        resource: resource
          ? JSON.stringify({
              labels: JSON.parse(resource.labels),
              properties: JSON.parse(resource.properties),
            })
          : null,
      });
    };
    const refusal = check?.(world) ?? null;
    const read = [...world.resources.keys()];
    if (refusal) return { granted: [], mine: null, refusal, names: read, waitingFor: new Map(), present };
    const candidates = arriving ? [...world.candidates, arriving] : world.candidates;
    const byKey = new Map(candidates.map((candidate) => [candidate.pending.key, candidate]));
    const rows: LockRow[][] = [];
    let mine: LockRow[] | null = null;
    const decision = decide(
      world.resources,
      candidates.map((candidate) => candidate.pending),
    );
    for (const grant of decision.grants) {
      const candidate = byKey.get(grant.key);
      if (!candidate) throw new Error(`grant for an unknown request ${grant.key}`);
      done.add(grant.key);
      const written = this.#apply(grant, candidate, at);
      if (candidate === arriving) mine = written;
      else rows.push(written);
    }
    return {
      granted: rows.map((locks) => locks.map(present)),
      mine: mine === null ? null : mine.map(present),
      refusal: null,
      names: read,
      waitingFor: decision.waitingFor,
      present,
    };
  }

  #claimNames(claims: readonly Claim[]): string[] {
    return claims.flatMap((claim) =>
      claim.service !== null
        ? [claim.service]
        : this.#statements.labelMembers.all({ label: claim.label ?? '' }).map((member) => member.name),
    );
  }

  /**
   * An acquire inside a write transaction: refusals that never wait (a limit that does not
   * match, a label nobody carries), then the grant pass with the request arriving last of
   * its priority; if it is not granted, the holders of what it could not get and, with
   * `queue`, its place in line.
   */
  #acquireIn(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    keyed = false,
  ): AcquireResult | KeyRefusal {
    const s = this.#statements;
    const at = this.#now();
    const claims = claimsOf(request);
    for (const claim of claims) {
      if (claim.label !== null && s.labelMembers.all({ label: claim.label }).length === 0) {
        return { acquired: false, noSuchLabel: claim.label };
      }
    }
    const arriving: Candidate = {
      pending: {
        key: request.id,
        priority: request.priority ?? 0,
        ticket: Number.MAX_SAFE_INTEGER,
        claims,
        grantable: true,
      },
      request: {
        id: request.id,
        who: request.who,
        ttlSeconds: request.ttlSeconds,
        owner: request.owner ?? null,
        ownerKey: request.ownerKey ?? null,
        group: request.group === true,
        note: request.note ?? null,
        link: request.link ?? null,
        keyed,
      },
    };
    // A limit that does not match, or claims that could never be granted together, are
    // refused before anything is granted.
    const { mine, refusal, names, waitingFor } = this.#pass([], at, arriving, (world) => {
      for (const claim of claims) {
        const view = claim.service === null ? undefined : world.resources.get(claim.service);
        const limit = view ? limitMismatch(view, claim) : null;
        if (view && limit !== null) return { acquired: false, limitMismatch: { service: view.name, limit } };
      }
      return everGrantable(world.resources, claims) ? null : { acquired: false, unsatisfiable: true };
    });
    if (refusal) return refusal;
    if (mine) {
      const locks = mine;
      const [lock] = locks;
      if (!lock) throw new Error(`request ${request.id} was granted nothing`);
      return { acquired: true, lock, locks };
    }
    const holders = this.#blockers(waitingFor.get(request.id) ?? [], names, at);
    const holder = holders[0];
    // Nobody holds anything in its way: what blocks it waits for resources deleted since.
    if (!holder) return { acquired: false, unsatisfiable: true };
    const first = claims[0];
    const display = first?.service ?? first?.label ?? request.service;
    const queueFull =
      queue?.maxWaiters !== undefined &&
      (s.countWaiters.get({ service: display, now: at })?.n ?? 0) >= queue.maxWaiters;
    if (!queue || queueFull) {
      return { acquired: false, holder, holders, waiter: null, ...(queueFull ? { queueFull } : {}) };
    }
    const row = s.insertWaiter.all({
      service: display,
      who: request.who,
      ttl: request.ttlSeconds,
      lockId: request.id,
      lockOwner: request.owner ?? null,
      lockOwnerKey: request.ownerKey ?? null,
      owner: queue.owner,
      now: at,
      aliveUntil: at + WAITER_LEASE_MS,
      priority: request.priority ?? 0,
      isGroup: request.group ? 1 : 0,
      label: first?.service === null ? (first?.label ?? null) : null,
      mode: first?.mode ?? 'exclusive',
      note: request.note ?? null,
      link: request.link ?? null,
    })[0];
    if (!row) throw new Error(`waiter of ${request.id} was not written`);
    claims.forEach((claim, idx) => {
      s.insertClaim.run({
        ticket: row.ticket,
        idx,
        service: claim.service,
        label: claim.label,
        mode: claim.mode,
        limit: claim.limit,
        quantity: claim.quantity,
      });
    });
    return { acquired: false, holder, holders, waiter: this.#waiter(row, at) };
  }

  /**
   * Who keeps a refused request out: the live holders of the services it waits for, oldest
   * first; when those are free (an earlier waiter waits for them), the holders of every
   * service the pass read, among them what that waiter waits for.
   */
  #blockers(waitingFor: readonly string[], read: readonly string[], at: number): Lock[] {
    const own = this.#holdersOf(waitingFor, at);
    return own.length > 0 ? own : this.#holdersOf(read, at);
  }

  /** The live holders of the services, oldest first. */
  #holdersOf(names: Iterable<string>, at: number): Lock[] {
    const seen = new Set<string>();
    const holders: Lock[] = [];
    for (const name of names) {
      if (seen.has(name)) continue;
      seen.add(name);
      holders.push(...this.#statements.holderLocks.all({ service: name, now: at }).map(toLock));
    }
    return holders.sort(
      (a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
    );
  }

  #waiter(row: WaiterRow, at: number): Waiter {
    const ahead = this.#statements.aheadOf.get({
      service: row.service,
      ticket: row.ticket,
      priority: row.priority,
      now: at,
    });
    return toWaiter(row, (ahead?.n ?? 0) + 1);
  }

  /** An acquire with an idempotency key, in one IMMEDIATE transaction (see IdempotencyKey). */
  #acquireKeyed(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey,
  ): AcquireResult | KeyRefusal {
    const s = this.#statements;
    const at = this.#now();
    const row = s.keyByName.get({ scope: key.scope, key: key.key });
    if (!row) {
      s.insertKey.run({ ...key, lockId: request.id, service: request.service, now: at });
      return this.#acquireIn(request, queue, true);
    }
    if (row.fingerprint !== key.fingerprint) return { acquired: false, keyReused: true };
    s.keyAttempt.run({ scope: key.scope, key: key.key, attempt: key.attempt });
    const id = row.lock_id;
    const held = s.granted.all({ id, now: at }).map(toLock);
    const [first] = held;
    if (first) return { acquired: true, lock: first, locks: held, replayed: true };
    const waiter = queue
      ? s.rejoin.all({ lockId: id, owner: queue.owner, aliveUntil: at + WAITER_LEASE_MS })[0]
      : undefined;
    if (waiter) {
      // Still in line: the retry waits in the same place (granted first if its turn came).
      const claims = s.claims.all({ ticket: waiter.ticket }).map(toClaim);
      const { names, waitingFor } = this.#pass(this.#claimNames(claims), at);
      const locks = s.granted.all({ id, now: at }).map(toLock);
      const [lock] = locks;
      if (lock) return { acquired: true, lock, locks, replayed: true };
      const holders = this.#blockers(waitingFor.get(id) ?? [], names, at);
      const holder = holders[0];
      if (!holder) {
        this.#leave(waiter.ticket, undefined, at);
        return { acquired: false, unsatisfiable: true };
      }
      return { acquired: false, holder, holders, waiter: this.#waiter(waiter, at), replayed: true };
    }
    if (row.granted) return { acquired: false, ended: { lockId: id } };
    // The earlier request got nothing (refused, or it left the queue): a new acquire under its id.
    return this.#acquireIn({ ...request, id }, queue, true);
  }

  /** Takes a waiter out of line and lets in whoever it was keeping waiting. */
  #leave(ticket: number, attempt: string | undefined, at: number): boolean {
    const s = this.#statements;
    const claims = s.claims.all({ ticket }).map(toClaim);
    const left =
      attempt === undefined ? s.deleteWaiter.all({ ticket })[0] : s.leaveAs.all({ ticket, attempt })[0];
    if (!left) return false;
    this.#pass(this.#claimNames(claims), at);
    return true;
  }

  /** Deletes held locks (already read) and grants what they free. */
  #end(rows: readonly LockRow[], at: number, context: Partial<Omit<StatementContext, 'now'>> = {}): Lock[] {
    const ended = rows.map((row) => {
      const lock = this.#lock(row.id, at);
      this.#withContext(context, () => this.#statements.removeAny.run({ id: row.id }));
      this.#changed.add(row.service);
      return lock;
    });
    this.#pass(new Set(rows.map((row) => row.service)), at);
    return ended;
  }

  #resource(row: ResourceRow, at: number): Resource {
    const holders = this.#statements.holderLocks.all({ service: row.name, now: at }).map(toLock);
    const waiters = this.#statements.liveWaiters
      .all({ service: row.name, now: at })
      .map((waiter, index) => toWaiter(waiter, index + 1));
    return { ...toSpec(row), holders, waiters };
  }

  #putResource(spec: ResourceSpec, source: 'api' | 'file', at: number): boolean {
    const s = this.#statements;
    const created = s.resource.get({ name: spec.name }) === undefined;
    s.upsertResource.run({
      name: spec.name,
      labels: JSON.stringify(spec.labels),
      properties: JSON.stringify(spec.properties),
      capacity: spec.capacity,
      description: spec.description,
      source,
    });
    s.deleteResourceLabels.run({ name: spec.name });
    for (const label of spec.labels) s.insertResourceLabel.run({ label, name: spec.name });
    // Its locks show its limit: the new capacity.
    s.setLimit.run({ service: spec.name, limit: spec.capacity });
    this.#changed.add(spec.name);
    this.#pass([spec.name], at);
    return created;
  }

  // --- LockStore ----------------------------------------------------------------------

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
    const [claim, ...more] = claimsOf(request);
    const plain = !key && claim?.service && more.length === 0 && !request.group ? claim : null;
    return this.#write(() => {
      if (plain?.service) {
        const at = this.#now();
        const created = this.#statements.insertFree.all({
          id: request.id,
          service: plain.service,
          who: request.who,
          ttl: request.ttlSeconds,
          expires: request.ttlSeconds === null ? null : at + request.ttlSeconds * 1000,
          owner: request.owner ?? null,
          ownerKey: request.ownerKey ?? null,
          limit: plain.mode === 'shared' ? 1 : (plain.limit ?? 1),
          mode: plain.mode,
          note: request.note ?? null,
          link: request.link ?? null,
          now: at,
        })[0];
        if (created) {
          // Nobody waits for it by name and it carries no label: the new lock has no waiters.
          const lock = toLock({ ...created, waiters: 0 });
          return { acquired: true, lock, locks: [lock] };
        }
      }
      return key ? this.#acquireKeyed(request, queue, key) : this.#acquireIn(request, queue);
    });
  }

  async get(id: string): Promise<Lock | null> {
    return guard(() => nullable(this.#statements.byId.get({ id, now: this.#now() })));
  }

  async granted(requestId: string): Promise<Lock[]> {
    return guard(() => this.#statements.granted.all({ id: requestId, now: this.#now() }).map(toLock));
  }

  /**
   * A release is one statement; only when a waiter may want the service does the grant
   * pass follow, in the same write. Nothing can take the service in between: the
   * one-statement acquire leaves a service with waiters to the grant pass, which serves
   * waiters first.
   */
  async release(id: string, owner?: OwnerMatch, attempt?: string): Promise<Lock | null> {
    return this.#write(() => {
      const at = this.#now();
      const params = { id, ...byOwner(owner), now: at };
      const removed = (
        attempt === undefined
          ? this.#statements.remove.all(params)
          : this.#statements.removeAs.all({ ...params, attempt })
      )[0];
      if (!removed) return null;
      this.#changed.add(removed.service);
      if (!this.#statements.mayGrant.get({ service: removed.service })?.may) {
        return toLock({ ...removed, waiters: 0 });
      }
      return this.#pass([removed.service], at).present(removed);
    });
  }

  async releaseGroup(groupId: string, owner?: OwnerMatch): Promise<{ locks: Lock[]; denied: boolean }> {
    return this.#write(() => {
      const at = this.#now();
      const rows = this.#statements.groupLocks.all({ id: groupId, now: at });
      if (owner && rows.some((row) => !owns(row, owner))) return { locks: [], denied: true };
      return { locks: this.#end(rows, at), denied: false };
    });
  }

  async renew(id: string, ttlSeconds: number | null, owner?: OwnerMatch): Promise<Lock | null> {
    return this.#write(() => {
      const at = this.#now();
      const row = this.#statements.renew.all({ id, ttl: ttlSeconds, ...byOwner(owner), now: at })[0];
      return row ? this.#lock(row.id, at) : null;
    });
  }

  async setNote(id: string, note: string | null, owner?: OwnerMatch): Promise<Lock | null> {
    return this.#write(() => {
      const at = this.#now();
      const row = this.#statements.setNote.all({ id, note, ...byOwner(owner), now: at })[0];
      return row ? this.#lock(row.id, at) : null;
    });
  }

  async renewGroup(
    groupId: string,
    ttlSeconds: number | null,
    owner?: OwnerMatch,
  ): Promise<{ locks: Lock[]; denied: boolean }> {
    return this.#write(() => {
      const at = this.#now();
      const rows = this.#statements.groupLocks.all({ id: groupId, now: at });
      if (owner && rows.some((row) => !owns(row, owner))) return { locks: [], denied: true };
      for (const row of rows) this.#statements.renewAny.all({ id: row.id, ttl: ttlSeconds, now: at });
      return { locks: rows.map((row) => this.#lock(row.id, at)), denied: false };
    });
  }

  async settle(service: string | readonly string[]): Promise<Lock | null> {
    return this.#write(() => {
      const at = this.#now();
      const { granted } = this.#pass(typeof service === 'string' ? [service] : service, at);
      return granted[0]?.[0] ?? null;
    });
  }

  async leave(ticket: number, attempt?: string): Promise<boolean> {
    return this.#write(() => this.#leave(ticket, attempt, this.#now()));
  }

  async heartbeat(owner: string): Promise<void> {
    await this.#write(() =>
      this.#statements.heartbeat.run({ owner, aliveUntil: this.#now() + WAITER_LEASE_MS }),
    );
  }

  async queue(service: string): Promise<Queue> {
    return this.#consistently(() => {
      const at = this.#now();
      const holders = this.#statements.holderLocks.all({ service, now: at }).map(toLock);
      const waiters = this.#statements.liveWaiters.all({ service, now: at });
      return {
        service,
        holder: holders[0] ?? null,
        holders,
        waiters: waiters.map((row, index) => toWaiter(row, index + 1)),
      };
    });
  }

  onChange(listener: (service: string) => void): () => void {
    this.#changes.on('change', listener);
    return () => this.#changes.off('change', listener);
  }

  async list(request: ListRequest): Promise<LockPage> {
    return this.#consistently(() => {
      const { service, who } = request;
      const list = this.#statements.lists[(service !== undefined ? 2 : 0) + (who !== undefined ? 1 : 0)];
      if (list === undefined) throw new Error('no list statement for these filters');
      // Only the parameters the statement names are bound.
      const where: Filter = {
        now: this.#now(),
        ...(service !== undefined ? { service } : {}),
        ...(who !== undefined ? { who } : {}),
      };
      const rows = list.page.all({
        ...where,
        limit: request.perPage,
        offset: (request.page - 1) * request.perPage,
      });
      return { locks: rows.map(toLock), total: list.count.get(where)?.total ?? 0 };
    });
  }

  async forceRelease(id: string, reason: string | null): Promise<Lock | null> {
    return this.#write(() => {
      const at = this.#now();
      const row = this.#statements.byId.get({ id, now: at });
      if (!row) return null;
      return this.#end([row], at, { release: 'force-released', reason })[0] ?? null;
    });
  }

  async steal(
    id: string,
    request: StealRequest,
    reason: string,
  ): Promise<{ stolen: Lock; lock: Lock } | null> {
    return this.#write(() => {
      const at = this.#now();
      const row = this.#statements.byId.get({ id, now: at });
      if (!row) return null;
      const stolen = toLock(row);
      this.#withContext(
        { release: 'stolen', reason, by_lock_id: request.id, by_who: request.who, by_owner: request.owner },
        () => this.#statements.removeAny.run({ id }),
      );
      // In its place, ahead of the queue: the same slot (mode, limit), a new token. The
      // service's holders are as many as before, so nobody else can be let in: no grant pass.
      this.#statements.insert.all({
        id: request.id,
        service: row.service,
        who: request.who,
        ttl: request.ttlSeconds,
        expires: request.ttlSeconds === null ? null : at + request.ttlSeconds * 1000,
        owner: request.owner,
        ownerKey: request.ownerKey,
        limit: row.max_holders,
        mode: row.mode,
        groupId: null,
        member: 0,
        note: request.note,
        link: null,
        now: at,
      });
      this.#changed.add(row.service);
      return { stolen, lock: this.#lock(request.id, at) };
    });
  }

  async sweep(limit: number): Promise<{ expired: Lock[]; granted: Lock[] }> {
    return this.#write(() => {
      const s = this.#statements;
      const at = this.#now();
      const expired = s.sweepExpired.all({ limit, now: at });
      const names = new Set(expired.map((row) => row.service));
      for (const { ticket } of s.deadWaiters.all({ limit, now: at })) {
        for (const name of this.#claimNames(s.claims.all({ ticket }).map(toClaim))) names.add(name);
        s.deleteWaiter.run({ ticket });
      }
      for (const name of names) this.#changed.add(name);
      const { granted } = this.#pass(names, at);
      return { expired: expired.map(toLock), granted: granted.flat() };
    });
  }

  async putResource(spec: ResourceSpec): Promise<{ resource: Resource; created: boolean }> {
    return this.#write(() => {
      const at = this.#now();
      const created = this.#putResource(spec, 'api', at);
      const row = this.#statements.resource.get({ name: spec.name });
      if (!row) throw new Error(`resource ${spec.name} was just written but cannot be read`);
      return { resource: this.#resource(row, at), created };
    });
  }

  async deleteResource(name: string): Promise<'deleted' | 'missing' | 'in-use'> {
    return this.#write(() => {
      const at = this.#now();
      const s = this.#statements;
      if (!s.resource.get({ name })) return 'missing';
      if (s.isHeld.get({ service: name, now: at })) return 'in-use';
      s.deleteResource.run({ name });
      s.deleteResourceLabels.run({ name });
      // Its label waiters may now wait for nothing they can get: they stay until their deadline.
      this.#changed.add(name);
      return 'deleted';
    });
  }

  async getResource(name: string): Promise<Resource | null> {
    return this.#consistently(() => {
      const row = this.#statements.resource.get({ name });
      return row ? this.#resource(row, this.#now()) : null;
    });
  }

  async listResources(label?: string): Promise<Resource[]> {
    return this.#consistently(() => {
      const at = this.#now();
      const rows =
        label === undefined
          ? this.#statements.allResources.all()
          : this.#statements.resourcesWithLabel.all({ label });
      return rows.map((row) => this.#resource(row, at));
    });
  }

  async syncResources(specs: readonly ResourceSpec[]): Promise<{ kept: string[] }> {
    return this.#write(() => {
      const at = this.#now();
      const s = this.#statements;
      const wanted = new Set(specs.map((spec) => spec.name));
      const kept: string[] = [];
      for (const { name } of s.fileResources.all()) {
        if (wanted.has(name)) continue;
        if (s.isHeld.get({ service: name, now: at })) {
          kept.push(name);
          continue;
        }
        s.deleteResource.run({ name });
        s.deleteResourceLabels.run({ name });
      }
      for (const spec of specs) {
        const row = s.resource.get({ name: spec.name });
        if (row && row.source === 'file' && sameSpec(toSpec(row), spec)) continue;
        this.#putResource(spec, 'file', at);
      }
      return { kept };
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
          : this.#statements.snapshotPageOfService.all({ service, after, limit, now });
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
    return this.#write(() => {
      const ids = this.#statements.pruneEvents.all({ cutoff: this.#now() - retentionMs, limit });
      if (ids.length > 0) {
        this.#statements.recordPruned.run({ through: Math.max(...ids.map((row) => row.id)) });
      }
      return ids.length;
    });
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
    await this.#checkpointer?.stop();
    // Writes asked before close are committed and answered, not dropped.
    this.#held = false;
    this.#flush();
    this.#db.close();
  }
}

function toClaim(row: ClaimRow): Claim {
  return {
    service: row.service,
    label: row.label,
    mode: row.mode as LockMode,
    limit: row.max_holders,
    quantity: row.quantity,
  };
}

function toSpec(row: ResourceRow): ResourceSpec {
  return {
    name: row.name,
    labels: JSON.parse(row.labels) as string[],
    properties: JSON.parse(row.properties) as Record<string, string>,
    capacity: row.capacity,
    description: row.description,
  };
}

function sameSpec(a: ResourceSpec, b: ResourceSpec): boolean {
  return (
    JSON.stringify([a.labels, a.properties, a.capacity, a.description]) ===
    JSON.stringify([b.labels, b.properties, b.capacity, b.description])
  );
}

/** Whether a held lock is the owner's (see OwnerMatch). */
function owns(row: { owner: string | null; owner_key: string | null }, owner: OwnerMatch): boolean {
  return row.owner_key === owner.key || (row.owner_key === null && row.owner === owner.name);
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
    limit: row.max_holders,
    mode: row.mode as LockMode,
    groupId: row.group_id,
    resource: row.resource
      ? { name: row.service, ...(JSON.parse(row.resource) as Omit<ResourceRef, 'name'>) }
      : null,
    note: row.note,
    link: row.link,
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
    priority: row.priority,
    mode: row.mode as LockMode,
    label: row.label,
    groupId: row.is_group === 1 ? row.lock_id : null,
    note: row.note,
    link: row.link,
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
    groupId: row.group_id,
    mode: row.mode as LockMode,
    limit: row.max_holders,
    label: row.label,
    note: row.note,
    link: row.link,
    stolenBy: stolenByOf(row.type, row.by_lock_id, row.by_who, row.by_owner),
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
