import { formatTimestamp, type Lock, type LockEventRecord, type Queue } from '../core/lock.js';
import type { EventJson, LockJson, QueueJson } from './schemas.js';

/**
 * Domain values in their REST form. Each returns the type declared by its schema in
 * schemas.ts, so a field added to the schema and forgotten here (or the reverse) does not
 * compile.
 */

export function lockToJson(lock: Lock): LockJson {
  return {
    id: lock.id,
    service: lock.service,
    who: lock.who,
    createdAt: formatTimestamp(lock.createdAt),
    ttlSeconds: lock.ttlSeconds,
    expiresAt: lock.expiresAt === null ? null : formatTimestamp(lock.expiresAt),
    fencingToken: lock.fencingToken,
    waiters: lock.waiters,
    owner: lock.owner,
  };
}

/** An event of the history or the watch stream; `at` keeps milliseconds. */
export function eventToJson(event: LockEventRecord): EventJson {
  return {
    id: event.id,
    type: event.type,
    at: event.at.toISOString(),
    service: event.service,
    who: event.who,
    lock: {
      id: event.lockId,
      service: event.service,
      who: event.who,
      createdAt: formatTimestamp(event.createdAt),
      ttlSeconds: event.ttlSeconds,
      expiresAt: event.expiresAt === null ? null : formatTimestamp(event.expiresAt),
      fencingToken: event.fencingToken,
      waiters: event.waiters,
      owner: event.owner,
    },
    heldSeconds: event.heldMs === null ? null : event.heldMs / 1000,
    reason: event.reason,
  };
}

export function queueToJson(queue: Queue): QueueJson {
  return {
    service: queue.service,
    holder: queue.holder === null ? null : lockToJson(queue.holder),
    waiters: queue.waiters.map((waiter) => ({
      who: waiter.who,
      since: formatTimestamp(waiter.since),
      position: waiter.position,
    })),
  };
}
