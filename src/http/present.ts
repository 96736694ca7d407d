import { freeSlots } from '../core/grants.js';
import {
  formatTimestamp,
  type Lock,
  type LockEventRecord,
  type Queue,
  type Resource,
  type Waiter,
} from '../core/lock.js';
import type { LockGroup } from '../core/lock-service.js';
import type { AlertSubject, WebhookAlert, WebhookStatus } from '../core/webhooks.js';
import type {
  EventJson,
  GroupJson,
  LockJson,
  QueueJson,
  ResourceJson,
  WaiterJson,
  WebhookJson,
} from './schemas.js';

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
    limit: lock.limit,
    mode: lock.mode,
    groupId: lock.groupId,
    resource:
      lock.resource === null
        ? null
        : {
            name: lock.resource.name,
            labels: [...lock.resource.labels],
            properties: { ...lock.resource.properties },
          },
    note: lock.note,
    link: lock.link,
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
      limit: event.limit,
      mode: event.mode,
      groupId: event.groupId,
      note: event.note,
      link: event.link,
    },
    heldSeconds: event.heldMs === null ? null : event.heldMs / 1000,
    reason: event.reason,
    groupId: event.groupId,
    label: event.label,
    stolenBy: event.stolenBy === null ? null : { ...event.stolenBy },
  };
}

export function waiterToJson(waiter: Waiter): WaiterJson {
  return {
    who: waiter.who,
    since: formatTimestamp(waiter.since),
    position: waiter.position,
    priority: waiter.priority,
    mode: waiter.mode,
    label: waiter.label,
    groupId: waiter.groupId,
    note: waiter.note,
    link: waiter.link,
  };
}

export function queueToJson(queue: Queue): QueueJson {
  return {
    service: queue.service,
    holder: queue.holder === null ? null : lockToJson(queue.holder),
    holders: queue.holders.map(lockToJson),
    waiters: queue.waiters.map(waiterToJson),
  };
}

export function groupToJson(group: LockGroup): GroupJson {
  return { id: group.id, locks: group.locks.map(lockToJson) };
}

export function resourceToJson(resource: Resource): ResourceJson {
  return {
    name: resource.name,
    labels: [...resource.labels],
    properties: { ...resource.properties },
    capacity: resource.capacity,
    description: resource.description,
    holders: resource.holders.map(lockToJson),
    waiters: resource.waiters.map(waiterToJson),
    free: freeSlots(resource),
  };
}

const instant = (at: Date | null) => (at === null ? null : at.toISOString());

/** A webhook with its delivery state; never its secret. */
export function webhookToJson({ webhook, pending, lagSeconds }: WebhookStatus): WebhookJson {
  return {
    name: webhook.name,
    url: webhook.url,
    events: [...webhook.events],
    services: webhook.services,
    format: webhook.format,
    alertAfterSeconds: webhook.alertAfterSeconds,
    createdAt: webhook.createdAt.toISOString(),
    updatedAt: webhook.updatedAt.toISOString(),
    delivery: {
      cursor: webhook.cursor,
      pending,
      lagSeconds,
      delivered: webhook.delivered,
      dropped: webhook.dropped,
      failures: webhook.failures,
      lastStatus: webhook.lastStatus,
      lastError: webhook.lastError,
      lastAttemptAt: instant(webhook.lastAttemptAt),
      lastSuccessAt: instant(webhook.lastSuccessAt),
      nextAttemptAt: instant(webhook.nextAttemptAt),
    },
  };
}

/** An alert's data: what it is about (a lock, or a request in line) and for how long. */
export function alertToJson(kind: WebhookAlert, subject: AlertSubject, seconds: number) {
  const about = {
    id: subject.id,
    service: subject.service,
    who: subject.who,
    owner: subject.owner,
    since: formatTimestamp(subject.since),
    note: subject.note,
    link: subject.link,
  };
  return kind === 'held-too-long'
    ? { heldSeconds: seconds, lock: about }
    : { waitedSeconds: seconds, request: about };
}
