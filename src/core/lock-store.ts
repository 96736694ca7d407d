import type { ListRequest, Lock, LockPage } from './lock.js';

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
 * - `release` is atomic and idempotent in effect: it returns the lock exactly once, null after.
 * - `list` orders oldest first by createdAt, at the store's full precision (SQLite keeps
 *   milliseconds, PostgreSQL microseconds), then by id.
 * - Failures to reach the store reject with a TrackerError STORE_UNAVAILABLE; any other
 *   rejection is a bug.
 */
export interface LockStore {
  /** Takes `service` for `who` under the given id, unless someone holds it. */
  acquire(id: string, service: string, who: string): Promise<AcquireResult>;
  /** The held lock with this id, or null. `id` is any string; non-UUIDs simply match nothing. */
  get(id: string): Promise<Lock | null>;
  /** Releases the lock with this id and returns it; null when no such lock is held. */
  release(id: string): Promise<Lock | null>;
  list(request: ListRequest): Promise<LockPage>;
  /** Resolves when the store answers; used by readiness checks. */
  ping(): Promise<void>;
  /** Releases connections and file handles. Further calls are errors. */
  close(): Promise<void>;
}
