import type {
  AcquireRequest,
  HistoryQuery,
  ListRequest,
  Lock,
  LockEventRecord,
  LockPage,
  Queue,
  Resource,
  ResourceSpec,
  Waiter,
} from './lock.js';
import type { WebhookStore } from './webhooks.js';

/**
 * The result of an acquire: the new lock, or the lock that was there first (and, when the
 * request asked to wait, its place in the queue). With an idempotency key that was used
 * before (see IdempotencyKey): `replayed` when the answer is the earlier request's lock or
 * place in the queue, `keyReused` when the key came with another request, `ended` when the
 * lock granted under the key has ended (it is never granted again).
 */
export type AcquireResult =
  | {
      readonly acquired: true;
      /** The first of `locks` (a single acquire's one lock). */
      readonly lock: Lock;
      /** Every lock granted, in claim order (a group's members). */
      readonly locks: readonly Lock[];
      readonly replayed?: boolean;
    }
  | {
      readonly acquired: false;
      /** The oldest holder of what the request could not get. */
      readonly holder: Lock;
      /** Every live holder of what the request could not get, oldest first. */
      readonly holders: readonly Lock[];
      readonly waiter: Waiter | null;
      /** The request asked to wait but the queue was full (QueueRequest.maxWaiters). */
      readonly queueFull?: boolean;
      readonly replayed?: boolean;
    };

/**
 * What an acquire answers besides a grant or a place in line (never queued): with an
 * idempotency key, `keyReused` or `ended`; an exclusive claim naming another limit than
 * the one its service is held under (or registered with), `limitMismatch`; a label no
 * registered resource carries, `noSuchLabel`; claims that conflict with each other (more of a
 * label than it has resources), `unsatisfiable`.
 */
export type KeyRefusal =
  | { readonly acquired: false; readonly keyReused: true }
  | { readonly acquired: false; readonly ended: { readonly lockId: string } }
  | {
      readonly acquired: false;
      readonly limitMismatch: { readonly service: string; readonly limit: number };
    }
  | { readonly acquired: false; readonly noSuchLabel: string }
  /** The request can never be granted: it asks for more than its services can give at once. */
  | { readonly acquired: false; readonly unsatisfiable: true };

/**
 * A client's idempotency key for an acquire, kept by the store in the same transaction as
 * the acquire (until the key is older than the retention and its lock is gone). The same
 * key with the same fingerprint again: the earlier lock if it is held, the earlier place in
 * the queue if it still waits (the queue row then answers to this `attempt`), `ended` if the
 * lock granted under it has ended, and otherwise (the earlier request got nothing) a new
 * acquire under the earlier request's lock id.
 */
export interface IdempotencyKey {
  /** Whose key it is (the caller's token, '' without authentication). */
  readonly scope: string;
  readonly key: string;
  /** The request's content: the same key with another fingerprint is `keyReused`. */
  readonly fingerprint: string;
  /** This request, among the retries that present the key. */
  readonly attempt: string;
}

/** Asks an acquire to wait: the request joins the queue if the service is held. */
export interface QueueRequest {
  /**
   * The process that waits (a replica). Its waiters stay in line while it calls
   * `heartbeat` (at least every WAITER_LEASE_MS / 3); a dead process's waiters are skipped.
   */
  readonly owner: string;
  /** The request does not join a queue that already holds this many live waiters. */
  readonly maxWaiters?: number;
}

/** The lock a steal grants (its service, mode and limit are the stolen lock's). */
export interface StealRequest {
  /** The new lock's id. */
  readonly id: string;
  readonly who: string;
  /** null: the new lock never expires. */
  readonly ttlSeconds: number | null;
  readonly owner: string | null;
  readonly ownerKey: string | null;
  readonly note: string | null;
}

/**
 * Whose lock a release or renewal may change: the lock's recorded identity must be `key`.
 * A lock recorded without one (taken before identities were kept, migration 007, or by a
 * replica still running an older version) is matched by the token `name` instead.
 */
export interface OwnerMatch {
  readonly key: string;
  readonly name: string;
}

/** How long a waiter stays in line without a heartbeat from its owner. */
export const WAITER_LEASE_MS = 15_000;

/**
 * Where locks live. Every implementation runs the same contract suite
 * (test/contract/lock-store.contract.ts).
 *
 * Semantics every store guarantees:
 * - `acquire` is atomic: of any number of concurrent acquires for one service, across
 *   processes sharing the store, exactly as many succeed as the service admits (one, for
 *   the guide's acquire; see core/grants.ts). Every grant is decided by the rules of
 *   core/grants.ts over holders and a queue read inside the write transaction that carries
 *   it out (SQLite: the file's write lock; PostgreSQL: the row lock of every `services` row
 *   involved, taken first), never by a read outside it.
 *   The store's clock sets `createdAt`: the injected clock on SQLite (one process clock
 *   decides), the database's now() on PostgreSQL (replicas' clocks never matter).
 * - `acquire` resolves only after the lock is durably committed.
 * - Expiry: a lock whose `expiresAt` is at or before the store's now is gone for every
 *   purpose at once: `acquire` takes the service over in the same atomic step, and `get`,
 *   `release`, `renew` and `list` never return it, whether or not its row still exists.
 * - Fencing: each successful `acquire` gets a token strictly greater than every token given
 *   before for that service; the counter lives in the store and survives releases,
 *   expiries, restarts and replicas.
 * - `release` is atomic and idempotent in effect: it returns the lock exactly once, null after.
 * - `list` orders oldest first by createdAt, at the store's full precision (SQLite keeps
 *   milliseconds, PostgreSQL microseconds), then by id.
 * - Queue: an acquire that is given a QueueRequest and cannot be granted joins the queue in
 *   the same atomic step (arrival order is the store's, a ticket). When a holder releases
 *   (in the same atomic step as the release) or expires (at the next `settle`, sweep or
 *   acquire of the service), live waiters are granted in the order of core/grants.ts under
 *   the id of their original request (a group's locks get their own ids, with the request's
 *   id as groupId). A new request never overtakes a waiter of its priority. Every change
 *   that can let a waiter in is announced through `onChange`, to every process sharing
 *   the store.
 * - History: every change to a lock or a queue appends a LockEventRecord in the same
 *   transaction as the change (the database writes it, in triggers), so an event exists
 *   exactly when its change committed, whichever process made it. Event ids grow in the
 *   order `readEvents` hands them out, which never skips an event that commits later.
 * - Failures to reach the store reject with a TrackerError STORE_UNAVAILABLE; any other
 *   rejection is a bug.
 */
export interface LockStore {
  /** The webhooks kept in this store, and their delivery state (core/webhooks.ts). */
  readonly webhooks: WebhookStore;
  /**
   * Takes the service under the given id, unless someone holds it (an expired holder
   * doesn't); with `queue`, a refused request joins the queue. With `key`, as IdempotencyKey
   * says (the lock or waiter then has the key's lock id, which may not be `request.id`).
   */
  acquire(request: AcquireRequest, queue?: QueueRequest): Promise<AcquireResult>;
  acquire(
    request: AcquireRequest,
    queue: QueueRequest | undefined,
    key: IdempotencyKey | undefined,
  ): Promise<AcquireResult | KeyRefusal>;
  /**
   * Grants what the service (or each of the services) can take now to its waiters, in grant
   * order (an expired holder is deleted first); returns the first lock granted, or null.
   */
  settle(service: string | readonly string[]): Promise<Lock | null>;
  /**
   * The locks held under a request's id: the lock with that id (a single acquire), or every
   * live lock of the group with that id. Empty when none is held.
   */
  granted(requestId: string): Promise<Lock[]>;
  /**
   * Releases every held lock of a group in one transaction (with `owner`, only if all are
   * that owner's: otherwise nothing is released and `denied` is set); grants what that frees.
   */
  releaseGroup(groupId: string, owner?: OwnerMatch): Promise<{ locks: Lock[]; denied: boolean }>;
  /** Renews every held lock of a group, as `renew` does each; empty when none is held. */
  renewGroup(
    groupId: string,
    ttlSeconds: number | null,
    owner?: OwnerMatch,
  ): Promise<{ locks: Lock[]; denied: boolean }>;
  /**
   * Creates or replaces a registered resource; `created` when it was new. Its waiters are
   * granted what it can now give (a new label member, a larger capacity).
   */
  putResource(spec: ResourceSpec): Promise<{ resource: Resource; created: boolean }>;
  /**
   * Deletes a registered resource: 'deleted', 'missing', or 'in-use' while it has a live
   * holder (nothing is deleted then).
   */
  deleteResource(name: string): Promise<'deleted' | 'missing' | 'in-use'>;
  getResource(name: string): Promise<Resource | null>;
  /** Registered resources (carrying `label`, when given), by name. */
  listResources(label?: string): Promise<Resource[]>;
  /**
   * Makes the registry's file-declared part equal `specs`: creates and replaces them, and
   * deletes the file-declared resources not among them unless held (those are returned).
   * Resources created through the API are left alone unless `specs` names them.
   */
  syncResources(specs: readonly ResourceSpec[]): Promise<{ kept: string[] }>;
  /**
   * Takes a waiter out of the queue. True when it was still waiting; false when it had
   * already been granted (the lock under its request id is then held) or dropped. With
   * `attempt`, only if its idempotency key (if any) still names that attempt.
   */
  leave(ticket: number, attempt?: string): Promise<boolean>;
  /** Keeps the owner's waiters alive for WAITER_LEASE_MS from now. */
  heartbeat(owner: string): Promise<void>;
  /** The holder and the live waiters of a service, in arrival order. */
  queue(service: string): Promise<Queue>;
  /**
   * Calls `listener(service)` after any commit that may let a waiter in (release, grant,
   * takeover of an expired lock, a waiter leaving), from any process sharing the store.
   * Returns the unsubscribe function.
   */
  onChange(listener: (service: string) => void): () => void;
  /**
   * Calls `listener()` soon after any process sharing the store committed new history
   * events, and whenever news may have been missed (the notification channel reconnected):
   * a hint to read `readEvents` now. Only stores shared by several processes have it
   * (PostgreSQL: LISTEN/NOTIFY); without it, other processes' events are found by polling.
   * Returns the unsubscribe function.
   */
  onEvents?(listener: () => void): () => void;
  /**
   * This process committed new history events: tell the other processes (their `onEvents`
   * listeners), outside any lock transaction. Only stores that have `onEvents`.
   */
  announceEvents?(): void;
  /** The held lock with this id, or null. `id` is any string; non-UUIDs simply match nothing. */
  get(id: string): Promise<Lock | null>;
  /**
   * Releases the lock with this id and returns it; null when no such lock is held (or,
   * with `owner`, when it is not that owner's, see OwnerMatch; or, with `attempt`, when its
   * idempotency key names another attempt). The oldest live waiter, if any, is granted the
   * lock in the same atomic step.
   */
  release(id: string, owner?: OwnerMatch, attempt?: string): Promise<Lock | null>;
  /**
   * Extends a held lock's lease to now + `ttlSeconds` (null: the lock's own TTL) and
   * returns it; null when the lock is not held (unknown, released or expired), so an
   * expired lock is never brought back. A lock without TTL renewed with null stays as is.
   * With `owner`, only a lock of that owner is renewed (see OwnerMatch).
   */
  renew(id: string, ttlSeconds: number | null, owner?: OwnerMatch): Promise<Lock | null>;
  /**
   * Sets a held lock's note (null: none) and returns it, recording `noted` in the history;
   * null when the lock is not held (or, with `owner`, not that owner's). Its lease, token
   * and link stay as they are.
   */
  setNote(id: string, note: string | null, owner?: OwnerMatch): Promise<Lock | null>;
  list(request: ListRequest): Promise<LockPage>;
  /**
   * Releases a held lock whoever holds it, like `release`, but records `force-released`
   * with the operator's reason. Null when no such lock is held.
   */
  forceRelease(id: string, reason: string | null): Promise<Lock | null>;
  /**
   * Ends the held lock `id` (recorded as `stolen`, with `reason` and the new lock) and, in
   * the same transaction, grants its service to `request` ahead of every waiter: a new lock
   * with the stolen one's mode and limit, a new fencing token. Null when no such lock is held.
   */
  steal(id: string, request: StealRequest, reason: string): Promise<{ stolen: Lock; lock: Lock } | null>;
  /**
   * Deletes up to `limit` expired locks, recording each one's `expired` event, and grants
   * their services to waiters; drops up to `limit` waiters of owners that stopped their
   * heartbeat (recorded as `dequeued`, abandoned). Expiry never waits for this (every read filters expired
   * rows); it makes the history and the watchers hear of an expiry without any request.
   */
  sweep(limit: number): Promise<{ expired: Lock[]; granted: Lock[] }>;
  /** Every held lock (of one service), from one snapshot, oldest first. */
  snapshot(service?: string): Promise<Lock[]>;
  /**
   * Up to `limit` held locks (of one service) with ids above `after` ('' or a lock id), in id order: a large
   * snapshot read a page at a time. A lock held throughout is on exactly one page, however
   * the others change between pages.
   */
  snapshotPage(query: { service?: string | undefined; after: string; limit: number }): Promise<Lock[]>;
  /**
   * Where a tail of the history starts: every event with an id at or below it is final,
   * and its change is visible to every read that starts after this resolves.
   */
  eventCursor(): Promise<number>;
  /**
   * Up to `limit` events with ids above `after`, oldest first. Never returns an event while
   * one with a smaller id might still commit: a caller that goes on from the last id it got
   * misses nothing. Ids at or below `settledThrough` are known final (a tail already went
   * past them), which spares the wait for transactions still running.
   */
  readEvents(after: number, limit: number, settledThrough?: number): Promise<LockEventRecord[]>;
  /** Events matching the query, newest first. */
  history(query: HistoryQuery): Promise<LockEventRecord[]>;
  /** Events with ids at or below this were pruned: a resume from a smaller id may miss some. */
  historyFloor(): Promise<number>;
  /**
   * Deletes up to `limit` of the events recorded more than `retentionMs` ago by the store's
   * clock, oldest first; returns how many it deleted.
   */
  pruneHistory(retentionMs: number, limit: number): Promise<number>;
  /**
   * Deletes up to `limit` idempotency keys created more than `retentionMs` ago whose lock is
   * neither held nor waiting; returns how many it deleted.
   */
  pruneIdempotencyKeys(retentionMs: number, limit: number): Promise<number>;
  /** How many locks are held and requests wait, in the whole store (for metrics). */
  stats(): Promise<{ locks: number; waiters: number }>;
  /** Resolves when the store answers; used by readiness checks. */
  ping(): Promise<void>;
  /** Releases connections and file handles. Further calls are errors. */
  close(): Promise<void>;
}
