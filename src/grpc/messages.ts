/**
 * Domain values as gRPC messages, and the few request fields the transport reads itself.
 * The messages are typed as a client decodes them (the generated `__Output` types, every
 * field present): a field added to the .proto and forgotten here does not compile. Proto3
 * has no null: what REST shows as null is 0 or '' here, or a message left out.
 */
import type { FeedMessage } from '../core/event-feed.js';
import { freeSlots } from '../core/grants.js';
import {
  formatTimestamp,
  type Lock,
  type LockEventRecord,
  type LockMode,
  type Queue,
  type Resource,
  type Waiter,
} from '../core/lock.js';
import type { ClaimOptions, LockGroup } from '../core/lock-service.js';
import type { Lock__Output as LockMessage } from './generated/tracker/lock/v1alpha1/Lock.js';
import type { LockClaim__Output as LockClaim } from './generated/tracker/lock/v1alpha1/LockClaim.js';
import type { LockEvent__Output as LockEventMessage } from './generated/tracker/lock/v1alpha1/LockEvent.js';
import type { LockGroup__Output as LockGroupMessage } from './generated/tracker/lock/v1alpha1/LockGroup.js';
import type { Queue__Output as QueueMessage } from './generated/tracker/lock/v1alpha1/Queue.js';
import type { Resource__Output as ResourceMessage } from './generated/tracker/lock/v1alpha1/Resource.js';
import type { Waiter__Output as WaiterMessage } from './generated/tracker/lock/v1alpha1/Waiter.js';
import type { WatchLocksResponse } from './generated/tracker/lock/v1alpha1/WatchLocksResponse.js';

/** The Lock message: "no TTL" is 0, "no expiry" and "no group" are empty, no resource is absent. */
export function lockMessage(lock: Lock): LockMessage {
  return {
    id: lock.id,
    service: lock.service,
    who: lock.who,
    createdAt: formatTimestamp(lock.createdAt),
    ttlSeconds: lock.ttlSeconds ?? 0,
    expiresAt: lock.expiresAt === null ? '' : formatTimestamp(lock.expiresAt),
    fencingToken: String(lock.fencingToken),
    waiters: lock.waiters,
    owner: lock.owner ?? '',
    limit: lock.limit,
    mode: lock.mode,
    groupId: lock.groupId ?? '',
    resource:
      lock.resource === null
        ? null
        : {
            name: lock.resource.name,
            labels: [...lock.resource.labels],
            properties: { ...lock.resource.properties },
          },
    note: lock.note ?? '',
    link: lock.link ?? '',
  };
}

export function waiterMessage(waiter: Waiter): WaiterMessage {
  return {
    who: waiter.who,
    since: formatTimestamp(waiter.since),
    position: waiter.position,
    priority: waiter.priority,
    mode: waiter.mode,
    label: waiter.label ?? '',
    groupId: waiter.groupId ?? '',
    note: waiter.note ?? '',
    link: waiter.link ?? '',
  };
}

export function queueMessage(queue: Queue): QueueMessage {
  return {
    service: queue.service,
    holder: queue.holder === null ? null : lockMessage(queue.holder),
    waiters: queue.waiters.map(waiterMessage),
    holders: queue.holders.map(lockMessage),
  };
}

export function groupMessage(group: LockGroup): LockGroupMessage {
  return { id: group.id, locks: group.locks.map(lockMessage) };
}

export function resourceMessage(resource: Resource): ResourceMessage {
  return {
    name: resource.name,
    labels: [...resource.labels],
    properties: { ...resource.properties },
    capacity: resource.capacity,
    // proto3 `optional`: left out when there is none.
    ...(resource.description === null ? {} : { description: resource.description }),
    holders: resource.holders.map(lockMessage),
    waiters: resource.waiters.map(waiterMessage),
    free: freeSlots(resource),
  };
}

export function eventMessage(event: LockEventRecord): LockEventMessage {
  return {
    id: String(event.id),
    type: event.type,
    at: event.at.toISOString(),
    service: event.service,
    who: event.who,
    lock: lockMessage({
      id: event.lockId,
      service: event.service,
      who: event.who,
      createdAt: event.createdAt,
      ttlSeconds: event.ttlSeconds,
      expiresAt: event.expiresAt,
      fencingToken: event.fencingToken ?? 0,
      waiters: event.waiters,
      owner: event.owner,
      // A waiting request (queued, dequeued) has no limit yet: 0.
      limit: event.limit ?? 0,
      mode: event.mode,
      groupId: event.groupId,
      resource: null,
      note: event.note,
      link: event.link,
    }),
    heldSeconds: event.heldMs === null ? 0 : event.heldMs / 1000,
    reason: event.reason ?? '',
    groupId: event.groupId ?? '',
    label: event.label ?? '',
    stolenBy: event.stolenBy === null ? null : { ...event.stolenBy, owner: event.stolenBy.owner ?? '' },
  };
}

export function watchMessage(message: FeedMessage): WatchLocksResponse {
  return message.kind === 'snapshot'
    ? {
        snapshot: {
          eventId: String(message.eventId),
          locks: message.locks.map(lockMessage),
          continued: message.continued,
          more: message.more,
        },
      }
    : { event: eventMessage(message.event) };
}

/**
 * The claim of a CreateLock request or of one AcquireLocks item. Proto3 cannot send an
 * absent string: an empty `service` beside a `label` is no service, and without a label it
 * goes to the core as it is, which refuses it naming `service`; an empty `mode` is the
 * default. The core checks every rule (the mode's two names included) and names the field,
 * under `locks[i].` for a group's claim; `limit` and `quantity` are `optional`, so they
 * reach it exactly as given.
 */
export function claimOptions(
  request: Pick<LockClaim, 'service' | 'label' | 'mode' | 'limit'> & { quantity?: number | undefined },
): ClaimOptions {
  const labelled = request.label !== '';
  return {
    service: labelled && request.service === '' ? undefined : request.service,
    label: labelled ? request.label : undefined,
    mode: request.mode === '' ? undefined : (request.mode as LockMode),
    limit: request.limit,
    quantity: request.quantity,
  };
}
