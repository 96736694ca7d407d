import type { ErrorJson, LockJson } from '../http/schemas.js';

/** A lock as the API returns it (its schema is the server's, src/http/schemas.ts). */
export type LockInfo = Readonly<LockJson>;

/** Any error answer from the server, with its stable `code` and HTTP status. */
export class TrackerApiError extends Error {
  override readonly name: string = 'TrackerApiError';
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
    readonly field?: string,
  ) {
    super(message);
  }
}

/**
 * The service is held by someone else, or as many times as its limit: `existingLock` is the
 * oldest holder, `holders` every holder of what the request could not get.
 */
export class LockHeldError extends TrackerApiError {
  override readonly name = 'LockHeldError';
  constructor(
    message: string,
    readonly existingLock: LockInfo,
    readonly holders: readonly LockInfo[] = [existingLock],
  ) {
    super(message, 'LOCK_HELD', 409);
  }
}

/** The request waited its `wait` and the service is still held (`existingLock`, `holders`). */
export class WaitTimeoutError extends TrackerApiError {
  override readonly name = 'WaitTimeoutError';
  constructor(
    message: string,
    readonly existingLock: LockInfo,
    readonly holders: readonly LockInfo[] = [existingLock],
  ) {
    super(message, 'WAIT_TIMEOUT', 409);
  }
}

/**
 * 409 LIMIT_MISMATCH: `service` is held (or registered) with another limit than the one
 * asked for; `limit` is the current one. Answered at once, never queued.
 */
export class LimitMismatchError extends TrackerApiError {
  override readonly name = 'LimitMismatchError';
  constructor(
    message: string,
    readonly service: string,
    readonly limit: number,
  ) {
    super(message, 'LIMIT_MISMATCH', 409, 'limit');
  }
}

/** 404 NO_SUCH_LABEL: no registered resource carries `label`. */
export class NoSuchLabelError extends TrackerApiError {
  override readonly name = 'NoSuchLabelError';
  constructor(
    message: string,
    readonly label: string,
  ) {
    super(message, 'NO_SUCH_LABEL', 404, 'label');
  }
}

/** 404 RESOURCE_NOT_FOUND: no registered resource has that name. */
export class ResourceNotFoundError extends TrackerApiError {
  override readonly name = 'ResourceNotFoundError';
  constructor(message: string) {
    super(message, 'RESOURCE_NOT_FOUND', 404);
  }
}

/** 409 RESOURCE_IN_USE: the resource is held, so it cannot be deleted now. */
export class ResourceInUseError extends TrackerApiError {
  override readonly name = 'ResourceInUseError';
  constructor(message: string) {
    super(message, 'RESOURCE_IN_USE', 409);
  }
}

/** No lock with that id is held. */
export class LockNotFoundError extends TrackerApiError {
  override readonly name = 'LockNotFoundError';
  constructor(message: string) {
    super(message, 'LOCK_NOT_FOUND', 404);
  }
}

/** Renewal of a lock that expired, was released or never existed. */
export class LockNotHeldError extends TrackerApiError {
  override readonly name = 'LockNotHeldError';
  constructor(message: string) {
    super(message, 'LOCK_NOT_HELD', 404);
  }
}

/** The server or its store cannot serve now: 503, or the server could not be reached. */
export class StoreUnavailableError extends TrackerApiError {
  override readonly name = 'StoreUnavailableError';
  constructor(message: string, status = 503) {
    super(message, 'STORE_UNAVAILABLE', status);
  }
}

/**
 * 401: the server requires a bearer token and got none, or one it does not know (revoked,
 * mistyped). Never retried.
 */
export class UnauthenticatedError extends TrackerApiError {
  override readonly name = 'UnauthenticatedError';
  constructor(message: string) {
    super(message, 'UNAUTHENTICATED', 401);
  }
}

/**
 * 403: the token is valid but may not do this: it lacks the scope (lock:read < lock:write <
 * lock:admin), its service patterns exclude the service, or the lock belongs to another token.
 * Never retried.
 */
export class PermissionDeniedError extends TrackerApiError {
  override readonly name = 'PermissionDeniedError';
  constructor(message: string) {
    super(message, 'PERMISSION_DENIED', 403);
  }
}

/**
 * 429 RATE_LIMITED: too many requests from this token (or address). `retryAfterSeconds` is
 * the server's Retry-After (null if it sent none). The request did nothing on the server.
 */
export class RateLimitedError extends TrackerApiError {
  override readonly name = 'RateLimitedError';
  constructor(
    message: string,
    readonly retryAfterSeconds: number | null,
  ) {
    super(message, 'RATE_LIMITED', 429);
  }
}

/**
 * 409 LOCK_ENDED: an acquire retried with its Idempotency-Key after the lock its first
 * attempt was granted (`lockId`) had already ended: the key is never granted twice. Or a
 * waiting acquire whose lock ended (expired, force-released) before its answer went out.
 */
export class LockEndedError extends TrackerApiError {
  override readonly name = 'LockEndedError';
  constructor(
    message: string,
    readonly lockId: string,
  ) {
    super(message, 'LOCK_ENDED', 409);
  }
}

/** 422 IDEMPOTENCY_KEY_REUSED: the Idempotency-Key came before with another request. */
export class IdempotencyKeyReusedError extends TrackerApiError {
  override readonly name = 'IdempotencyKeyReusedError';
  constructor(message: string) {
    super(message, 'IDEMPOTENCY_KEY_REUSED', 422, 'Idempotency-Key');
  }
}

type ErrorBody = Partial<ErrorJson>;

/** The typed error for an error answer, matched on the server's stable `code`. */
export function errorFromResponse(
  status: number,
  body: ErrorBody,
  retryAfter?: string | undefined,
): TrackerApiError {
  const message = body.error ?? `HTTP ${status}`;
  switch (body.code) {
    case 'LOCK_HELD':
      if (body.existingLock) return new LockHeldError(message, body.existingLock, body.holders);
      break;
    case 'WAIT_TIMEOUT':
      if (body.existingLock) return new WaitTimeoutError(message, body.existingLock, body.holders);
      break;
    case 'LIMIT_MISMATCH':
      if (body.service !== undefined && body.limit !== undefined) {
        return new LimitMismatchError(message, body.service, body.limit);
      }
      break;
    case 'NO_SUCH_LABEL':
      if (body.label !== undefined) return new NoSuchLabelError(message, body.label);
      break;
    case 'RESOURCE_NOT_FOUND':
      return new ResourceNotFoundError(message);
    case 'RESOURCE_IN_USE':
      return new ResourceInUseError(message);
    case 'LOCK_NOT_FOUND':
      return new LockNotFoundError(message);
    case 'LOCK_NOT_HELD':
      return new LockNotHeldError(message);
    case 'STORE_UNAVAILABLE':
      return new StoreUnavailableError(message, status);
    case 'UNAUTHENTICATED':
      return new UnauthenticatedError(message);
    case 'PERMISSION_DENIED':
      return new PermissionDeniedError(message);
    case 'RATE_LIMITED':
      return new RateLimitedError(message, retryAfterSeconds(retryAfter));
    case 'LOCK_ENDED':
      if (body.lockId) return new LockEndedError(message, body.lockId);
      break;
    case 'IDEMPOTENCY_KEY_REUSED':
      return new IdempotencyKeyReusedError(message);
  }
  return new TrackerApiError(message, body.code ?? 'UNKNOWN', status, body.field);
}

/** The server could not be reached at all (after the retries). */
export class ServerUnreachableError extends TrackerApiError {
  override readonly name = 'ServerUnreachableError';
  constructor(message: string) {
    super(message, 'UNREACHABLE', 0);
  }
}

/** `withLock`: the lock was lost while the function ran (renewal refused or lease run out). */
export class LockLostError extends TrackerApiError {
  override readonly name = 'LockLostError';
  constructor(message: string) {
    super(message, 'LOCK_LOST', 0);
  }
}

/** Retry-After in seconds: the delay form (whole seconds) or an HTTP date; null if absent or unreadable. */
function retryAfterSeconds(header: string | undefined): number | null {
  if (header === undefined || header.trim() === '') return null;
  if (/^\s*\d{1,9}\s*$/.test(header)) return Number(header);
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}
