import type { AcquireRequest, ListRequest, Lock, LockPage } from './lock.js';

/** The result of an acquire: the new lock, or the lock that was there first. */
export type AcquireResult =
  | { readonly acquired: true; readonly lock: Lock }
  | { readonly acquired: false; readonly holder: Lock };

/**
 * Where locks live. Every implementation runs the same contract suite
 * (test/contract/lock-store.contract.ts).
 *
 * Semantics every store guarantees:
 * - `acquire` is atomic: of any number of concurrent acquires for one service, across
 *   processes sharing the store, exactly one succeeds. The database decides (a unique
 *   constraint on `service`), never a read followed by a write in application code.
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
 * - Failures to reach the store reject with a TrackerError STORE_UNAVAILABLE; any other
 *   rejection is a bug.
 */
export interface LockStore {
  /** Takes the service under the given id, unless someone holds it (an expired holder doesn't). */
  acquire(request: AcquireRequest): Promise<AcquireResult>;
  /** The held lock with this id, or null. `id` is any string; non-UUIDs simply match nothing. */
  get(id: string): Promise<Lock | null>;
  /** Releases the lock with this id and returns it; null when no such lock is held. */
  release(id: string): Promise<Lock | null>;
  /**
   * Extends a held lock's lease to now + `ttlSeconds` (null: the lock's own TTL) and
   * returns it; null when the lock is not held (unknown, released or expired), so an
   * expired lock is never brought back. A lock without TTL renewed with null stays as is.
   */
  renew(id: string, ttlSeconds: number | null): Promise<Lock | null>;
  list(request: ListRequest): Promise<LockPage>;
  /** Resolves when the store answers; used by readiness checks. */
  ping(): Promise<void>;
  /** Releases connections and file handles. Further calls are errors. */
  close(): Promise<void>;
}
