import type { HeldLock, LockEvent } from './api.js';

/** A held lock with what sorting, filtering and rendering need, computed once. */
export interface Row {
  readonly lock: HeldLock;
  readonly createdMs: number;
  /** Infinity without a TTL. */
  readonly expiresMs: number;
  /** Lower-cased "service\nwho\nowner\nid\ngroupId", for the filter. */
  readonly search: string;
}

function toRow(lock: HeldLock): Row {
  const expiresMs = lock.expiresAt === null ? Number.POSITIVE_INFINITY : Date.parse(lock.expiresAt);
  return {
    lock,
    createdMs: Date.parse(lock.createdAt),
    expiresMs: Number.isNaN(expiresMs) ? Number.POSITIVE_INFINITY : expiresMs,
    search:
      `${lock.service}\n${lock.who}\n${lock.owner ?? ''}\n${lock.id}\n${lock.groupId ?? ''}\n${lock.note ?? ''}`.toLowerCase(),
  };
}

/**
 * Oldest first, as the API lists holders. createdAt has whole seconds; within one, the
 * fencing token (it grows with every grant of a service, across its holders), then the id.
 */
export function byAge(a: Row, b: Row): number {
  return (
    a.createdMs - b.createdMs ||
    a.lock.fencingToken - b.lock.fencingToken ||
    (a.lock.id < b.lock.id ? -1 : a.lock.id > b.lock.id ? 1 : 0)
  );
}

/**
 * The held locks, as the watch stream says: a snapshot replaces everything, each event is
 * an idempotent upsert or delete keyed by lock id (events replayed after a snapshot change
 * nothing). A service may have several holders (a semaphore, shared holders); a group's
 * locks share its `groupId`.
 */
export class LockState {
  private readonly rows = new Map<string, Row>();
  /** service → ids of its locks */
  private readonly byService = new Map<string, Set<string>>();
  /** groupId → ids of its held locks */
  private readonly byGroup = new Map<string, Set<string>>();
  /** Increases with every change; views re-derive when it moved. */
  version = 0;
  /** The id of the last event applied (or of the snapshot). */
  eventId = 0;

  get size(): number {
    return this.rows.size;
  }

  values(): IterableIterator<Row> {
    return this.rows.values();
  }

  get(id: string): Row | undefined {
    return this.rows.get(id);
  }

  /** The service's holders, oldest first. */
  holdersOf(service: string): Row[] {
    return this.collect(this.byService.get(service));
  }

  /** The held locks of a group, oldest first. */
  groupOf(groupId: string): Row[] {
    return this.collect(this.byGroup.get(groupId));
  }

  /** Every group with a held lock: its id and locks (oldest first), oldest group first. */
  groups(): Array<{ id: string; rows: Row[] }> {
    return [...this.byGroup.keys()]
      .map((id) => ({ id, rows: this.groupOf(id) }))
      .sort((a, b) => (a.rows[0] && b.rows[0] ? byAge(a.rows[0], b.rows[0]) : 0));
  }

  replace(locks: readonly HeldLock[], eventId: number): void {
    this.rows.clear();
    this.byService.clear();
    this.byGroup.clear();
    this.add(locks, eventId);
  }

  /** The next page of a snapshot: more held locks. */
  add(locks: readonly HeldLock[], eventId: number): void {
    for (const lock of locks) this.upsert(lock);
    this.eventId = eventId;
    this.version++;
  }

  /** Applies one event; true when the held locks changed. */
  apply(event: LockEvent): boolean {
    if (event.id > this.eventId) this.eventId = event.id;
    const { lock } = event;
    let changed = false;
    switch (event.type) {
      case 'acquired':
      case 'renewed':
      case 'noted':
        if (lock.fencingToken !== null) {
          changed = this.upsert({ ...lock, fencingToken: lock.fencingToken, limit: lock.limit ?? 1 });
        }
        break;
      case 'released':
      case 'expired':
      case 'force-released':
      case 'stolen':
        changed = this.remove(lock.id);
        break;
      case 'queued':
      case 'dequeued':
        changed = this.setWaiters(event.service, lock.waiters);
        break;
    }
    if (changed) this.version++;
    return changed;
  }

  private collect(ids: Set<string> | undefined): Row[] {
    const rows: Row[] = [];
    for (const id of ids ?? []) {
      const row = this.rows.get(id);
      if (row) rows.push(row);
    }
    return rows.sort(byAge);
  }

  private upsert(lock: HeldLock): boolean {
    const previous = this.rows.get(lock.id);
    if (previous && sameLock(previous.lock, lock)) return false;
    if (previous) this.unindex(previous.lock);
    this.rows.set(lock.id, toRow(lock));
    index(this.byService, lock.service, lock.id);
    if (lock.groupId !== null) index(this.byGroup, lock.groupId, lock.id);
    return true;
  }

  private remove(id: string): boolean {
    const row = this.rows.get(id);
    if (!row) return false;
    this.rows.delete(id);
    this.unindex(row.lock);
    return true;
  }

  private unindex(lock: HeldLock): void {
    unindex(this.byService, lock.service, lock.id);
    if (lock.groupId !== null) unindex(this.byGroup, lock.groupId, lock.id);
  }

  /** A queue's length is the service's: every holder of it shows the same count. */
  private setWaiters(service: string, waiters: number): boolean {
    let changed = false;
    for (const row of this.holdersOf(service)) {
      if (row.lock.waiters === waiters) continue;
      this.rows.set(row.lock.id, { ...row, lock: { ...row.lock, waiters } });
      changed = true;
    }
    return changed;
  }
}

function index(map: Map<string, Set<string>>, key: string, id: string): void {
  const ids = map.get(key);
  if (ids) ids.add(id);
  else map.set(key, new Set([id]));
}

function unindex(map: Map<string, Set<string>>, key: string, id: string): void {
  const ids = map.get(key);
  if (!ids) return;
  ids.delete(id);
  if (ids.size === 0) map.delete(key);
}

function sameLock(a: HeldLock, b: HeldLock): boolean {
  return (
    a.who === b.who &&
    a.service === b.service &&
    (a.owner ?? null) === (b.owner ?? null) &&
    a.createdAt === b.createdAt &&
    a.expiresAt === b.expiresAt &&
    a.ttlSeconds === b.ttlSeconds &&
    a.fencingToken === b.fencingToken &&
    a.waiters === b.waiters &&
    a.limit === b.limit &&
    a.mode === b.mode &&
    a.groupId === b.groupId &&
    a.note === b.note &&
    a.link === b.link
  );
}
