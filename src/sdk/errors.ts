/** A lock as the API returns it. */
export interface LockInfo {
  readonly id: string;
  readonly service: string;
  readonly who: string;
  readonly createdAt: string;
  readonly ttlSeconds: number | null;
  readonly expiresAt: string | null;
  readonly fencingToken: number;
  readonly waiters: number;
}

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

/** The service is held by someone else (`existingLock`). */
export class LockHeldError extends TrackerApiError {
  override readonly name = 'LockHeldError';
  constructor(
    message: string,
    readonly existingLock: LockInfo,
  ) {
    super(message, 'LOCK_HELD', 409);
  }
}

/** The request waited its `wait` and the service is still held (`existingLock`). */
export class WaitTimeoutError extends TrackerApiError {
  override readonly name = 'WaitTimeoutError';
  constructor(
    message: string,
    readonly existingLock: LockInfo,
  ) {
    super(message, 'WAIT_TIMEOUT', 409);
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

interface ErrorBody {
  error?: string;
  code?: string;
  field?: string;
  existingLock?: LockInfo;
}

/** The typed error for an error answer, matched on the server's stable `code`. */
export function errorFromResponse(status: number, body: ErrorBody): TrackerApiError {
  const message = body.error ?? `HTTP ${status}`;
  switch (body.code) {
    case 'LOCK_HELD':
      if (body.existingLock) return new LockHeldError(message, body.existingLock);
      break;
    case 'WAIT_TIMEOUT':
      if (body.existingLock) return new WaitTimeoutError(message, body.existingLock);
      break;
    case 'LOCK_NOT_FOUND':
      return new LockNotFoundError(message);
    case 'LOCK_NOT_HELD':
      return new LockNotHeldError(message);
    case 'STORE_UNAVAILABLE':
      return new StoreUnavailableError(message, status);
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
