import type { Lock, LockEvent } from './api.js';

/** A held lock with what sorting, filtering and rendering need, computed once. */
export interface Row {
  readonly lock: Lock;
  readonly createdMs: number;
  /** Infinity without a TTL. */
  readonly expiresMs: number;
  /** Lower-cased "service\nwho\nowner\nid", for the filter. */
  readonly search: string;
}

function toRow(lock: Lock): Row {
  const expiresMs = lock.expiresAt === null ? Number.POSITIVE_INFINITY : Date.parse(lock.expiresAt);
  return {
    lock,
    createdMs: Date.parse(lock.createdAt),
    expiresMs: Number.isNaN(expiresMs) ? Number.POSITIVE_INFINITY : expiresMs,
    search: `${lock.service}\n${lock.who}\n${lock.owner ?? ''}\n${lock.id}`.toLowerCase(),
  };
}

/**
 * The held locks, as the watch stream says: a snapshot replaces everything, each event is
 * an idempotent upsert or delete keyed by lock id (events replayed after a snapshot change
 * nothing), and a service has at most one lock.
 */
export class LockState {
  private readonly rows = new Map<string, Row>();
  /** service → id of its lock */
  private readonly byService = new Map<string, string>();
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

  ofService(service: string): Row | undefined {
    const id = this.byService.get(service);
    return id === undefined ? undefined : this.rows.get(id);
  }

  replace(locks: readonly Lock[], eventId: number): void {
    this.rows.clear();
    this.byService.clear();
    this.add(locks, eventId);
  }

  /** The next page of a snapshot: more held locks. */
  add(locks: readonly Lock[], eventId: number): void {
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
        // An event's lock names no resource (and a limit only once held): shown as a plain lock.
        if (lock.fencingToken !== null) {
          changed = this.upsert({
            ...lock,
            fencingToken: lock.fencingToken,
            limit: lock.limit ?? 1,
            resource: null,
          });
        }
        break;
      case 'released':
      case 'expired':
      case 'force-released':
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

  private upsert(lock: Lock): boolean {
    const previous = this.rows.get(lock.id);
    if (previous && sameLock(previous.lock, lock)) return false;
    const other = this.byService.get(lock.service);
    // One lock per service: a newer lock of the service replaces whatever is shown for it.
    if (other !== undefined && other !== lock.id) this.rows.delete(other);
    this.rows.set(lock.id, toRow(lock));
    this.byService.set(lock.service, lock.id);
    return true;
  }

  private remove(id: string): boolean {
    const row = this.rows.get(id);
    if (!row) return false;
    this.rows.delete(id);
    if (this.byService.get(row.lock.service) === id) this.byService.delete(row.lock.service);
    return true;
  }

  private setWaiters(service: string, waiters: number): boolean {
    const row = this.ofService(service);
    if (!row || row.lock.waiters === waiters) return false;
    this.rows.set(row.lock.id, { ...row, lock: { ...row.lock, waiters } });
    return true;
  }
}

function sameLock(a: Lock, b: Lock): boolean {
  return (
    a.who === b.who &&
    a.service === b.service &&
    (a.owner ?? null) === (b.owner ?? null) &&
    a.createdAt === b.createdAt &&
    a.expiresAt === b.expiresAt &&
    a.ttlSeconds === b.ttlSeconds &&
    a.fencingToken === b.fencingToken &&
    a.waiters === b.waiters
  );
}
