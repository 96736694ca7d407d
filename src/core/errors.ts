import type { Lock } from './lock.js';

/**
 * The closed list of error codes. They are part of the API (REST `code` field, gRPC
 * status mapping): never rename one; add new ones at the end.
 */
export const ErrorCode = {
  /** The service is already held; `existingLock` says by whom. */
  LOCK_HELD: 'LOCK_HELD',
  /** No lock with that id is held (never existed, or released). */
  LOCK_NOT_FOUND: 'LOCK_NOT_FOUND',
  /** The request is malformed; `field` names the culprit when there is one. */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** The store cannot be reached right now; safe to retry later. */
  STORE_UNAVAILABLE: 'STORE_UNAVAILABLE',
  /** A bug or an unexpected failure; details are logged, never sent. */
  INTERNAL: 'INTERNAL',
  /** Renewal of a lock that is not held (never existed, released or expired). */
  LOCK_NOT_HELD: 'LOCK_NOT_HELD',
  /** A request waited in the queue until its deadline; `existingLock` is the holder then. */
  WAIT_TIMEOUT: 'WAIT_TIMEOUT',
  /** The caller went away (connection closed, call cancelled) before an answer. */
  CANCELLED: 'CANCELLED',
  /** Authentication is on and the call carries no valid token. */
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  /** The token is valid but lacks the scope, the service, or the lock's ownership. */
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  /** Too many requests from this token (or address); `retryAfterSeconds` says when to retry. */
  RATE_LIMITED: 'RATE_LIMITED',
  /** The service's queue holds the most waiters allowed (--max-waiters-per-service). */
  QUEUE_FULL: 'QUEUE_FULL',
  /** The store holds the most locks allowed (--max-locks). */
  TOO_MANY_LOCKS: 'TOO_MANY_LOCKS',
  /** An idempotency key came again with another request (another service, who, TTL or wait). */
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  /**
   * The lock granted under this idempotency key has ended; it is never granted again. Also a
   * waiting request granted a lock that ended before the answer went out.
   */
  LOCK_ENDED: 'LOCK_ENDED',
  /** The server, or this token (address), has its most watch streams open (--max-watchers…). */
  TOO_MANY_WATCHERS: 'TOO_MANY_WATCHERS',
  /**
   * A watch stream read slower than events came and had too much waiting: it ends with this
   * as its last message; the client resumes from its last event id.
   */
  WATCHER_TOO_SLOW: 'WATCHER_TOO_SLOW',
  /**
   * An exclusive request named another `limit` than the one its service is held under (or
   * registered with); `limit` says the current one. Answered at once, never queued.
   */
  LIMIT_MISMATCH: 'LIMIT_MISMATCH',
  /** No registered resource carries the requested label; `label` names it. */
  NO_SUCH_LABEL: 'NO_SUCH_LABEL',
  /** No registered resource has that name. */
  RESOURCE_NOT_FOUND: 'RESOURCE_NOT_FOUND',
  /** No webhook has that name. */
  WEBHOOK_NOT_FOUND: 'WEBHOOK_NOT_FOUND',
  /** The resource is held: it cannot be deleted now. */
  RESOURCE_IN_USE: 'RESOURCE_IN_USE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class TrackerError extends Error {
  override readonly name = 'TrackerError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: {
      readonly field?: string;
      readonly existingLock?: Lock;
      /** LOCK_HELD, WAIT_TIMEOUT: every holder of what the request could not get. */
      readonly holders?: readonly Lock[];
      /** LIMIT_MISMATCH: the service's current limit. */
      readonly limit?: number;
      /** LIMIT_MISMATCH: the service. */
      readonly service?: string;
      /** NO_SUCH_LABEL: the label. */
      readonly label?: string;
      readonly retryAfterSeconds?: number;
      /** LOCK_ENDED: the lock that ended. */
      readonly lockId?: string;
    } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function lockHeld(existingLock: Lock, holders: readonly Lock[] = [existingLock]): TrackerError {
  return new TrackerError(ErrorCode.LOCK_HELD, 'lock already exists', { existingLock, holders });
}

export function limitMismatch(service: string, limit: number): TrackerError {
  return new TrackerError(
    ErrorCode.LIMIT_MISMATCH,
    `${service} is held (or registered) with limit ${limit}; ask with that limit`,
    { field: 'limit', limit, service },
  );
}

export function noSuchLabel(label: string): TrackerError {
  return new TrackerError(ErrorCode.NO_SUCH_LABEL, `no registered resource carries the label ${label}`, {
    field: 'label',
    label,
  });
}

export function resourceNotFound(): TrackerError {
  return new TrackerError(ErrorCode.RESOURCE_NOT_FOUND, 'resource not found');
}

export function resourceInUse(): TrackerError {
  return new TrackerError(ErrorCode.RESOURCE_IN_USE, 'the resource is held; release its locks first');
}

export function lockNotFound(): TrackerError {
  return new TrackerError(ErrorCode.LOCK_NOT_FOUND, 'lock not found');
}

export function lockNotHeld(): TrackerError {
  return new TrackerError(ErrorCode.LOCK_NOT_HELD, 'lock not held');
}

export function waitTimeout(existingLock: Lock, holders: readonly Lock[] = [existingLock]): TrackerError {
  return new TrackerError(ErrorCode.WAIT_TIMEOUT, 'timed out waiting for the lock', {
    existingLock,
    holders,
  });
}

export function cancelled(): TrackerError {
  return new TrackerError(ErrorCode.CANCELLED, 'the caller went away');
}

export function invalidArgument(field: string, message: string): TrackerError {
  return new TrackerError(ErrorCode.INVALID_ARGUMENT, message, { field });
}

export function storeUnavailable(cause: unknown): TrackerError {
  return new TrackerError(ErrorCode.STORE_UNAVAILABLE, 'store unavailable', {}, { cause });
}

/**
 * The default message is the same whatever the reason (no token, a malformed or an unknown
 * one), so that a refusal never says which tokens exist; a session of a token that was valid
 * and then revoked may say so.
 */
export function unauthenticated(message = 'a valid bearer token is required'): TrackerError {
  return new TrackerError(ErrorCode.UNAUTHENTICATED, message);
}

export function permissionDenied(message: string): TrackerError {
  return new TrackerError(ErrorCode.PERMISSION_DENIED, message);
}

export function rateLimited(retryAfterSeconds: number): TrackerError {
  return new TrackerError(ErrorCode.RATE_LIMITED, 'too many requests; slow down', { retryAfterSeconds });
}

export function queueFull(max: number): TrackerError {
  return new TrackerError(ErrorCode.QUEUE_FULL, `the queue of this service already holds ${max} waiters`);
}

export function tooManyWaiters(max: number): TrackerError {
  return new TrackerError(
    ErrorCode.QUEUE_FULL,
    `this server already has ${max} requests waiting (its --max-waiters); retry later or on another replica`,
  );
}

export function tooManyWatchers(who: 'the server' | 'this caller', max: number): TrackerError {
  const flag = who === 'the server' ? '--max-watchers' : '--max-watchers-per-token';
  return new TrackerError(
    ErrorCode.TOO_MANY_WATCHERS,
    `${who} already has ${max} watch streams open (${flag}); close one or retry later`,
  );
}

export function watcherTooSlow(bytes: number, limit: string): TrackerError {
  return new TrackerError(
    ErrorCode.WATCHER_TOO_SLOW,
    `this watch stream read too slowly: ${bytes} bytes were waiting for it, over ${limit}; ` +
      'reconnect with the last event id received to resume',
  );
}

export function tooManyLocks(max: number): TrackerError {
  return new TrackerError(ErrorCode.TOO_MANY_LOCKS, `the store already holds ${max} locks`);
}

export function idempotencyKeyReused(): TrackerError {
  return new TrackerError(
    ErrorCode.IDEMPOTENCY_KEY_REUSED,
    'this Idempotency-Key was used with another request (service, who, ttlSeconds or waitSeconds differ)',
    { field: 'Idempotency-Key' },
  );
}

/** A waiting request was granted, but its lock ended (expired, force-released) before the answer. */
export function grantEnded(lockId: string): TrackerError {
  return new TrackerError(
    ErrorCode.LOCK_ENDED,
    `the request was granted lock ${lockId}, which ended (expired or force-released) before the answer`,
    { lockId },
  );
}

export function lockEnded(lockId: string): TrackerError {
  return new TrackerError(
    ErrorCode.LOCK_ENDED,
    `the lock acquired with this Idempotency-Key (${lockId}) has ended; a key is never granted twice`,
    { lockId },
  );
}
