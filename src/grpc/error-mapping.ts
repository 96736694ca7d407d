import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { ErrorCode, TrackerError } from '../core/errors.js';
import { formatTimestamp } from '../core/lock.js';

/**
 * The one table from domain error codes to gRPC status codes. A refusal that may pass by
 * itself when the holders go (LOCK_HELD, WAIT_TIMEOUT) is ALREADY_EXISTS, as the guide has it;
 * one that the same request meets again until the caller changes it or the state is changed
 * on purpose is FAILED_PRECONDITION (gRPC's rule: do not retry as is): an idempotency key
 * reused, a lock that ended, a limit other than the one the service is held or registered
 * with (LIMIT_MISMATCH), deleting a resource that is held (RESOURCE_IN_USE).
 */
export const GRPC_STATUS: Readonly<Record<ErrorCode, status>> = {
  LOCK_HELD: status.ALREADY_EXISTS,
  LOCK_NOT_FOUND: status.NOT_FOUND,
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  STORE_UNAVAILABLE: status.UNAVAILABLE,
  INTERNAL: status.INTERNAL,
  LOCK_NOT_HELD: status.NOT_FOUND,
  // DEADLINE_EXCEEDED instead when the call's own deadline ran out: see server.ts.
  WAIT_TIMEOUT: status.ALREADY_EXISTS,
  CANCELLED: status.CANCELLED,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  QUEUE_FULL: status.RESOURCE_EXHAUSTED,
  TOO_MANY_LOCKS: status.RESOURCE_EXHAUSTED,
  IDEMPOTENCY_KEY_REUSED: status.FAILED_PRECONDITION,
  LOCK_ENDED: status.FAILED_PRECONDITION,
  TOO_MANY_WATCHERS: status.RESOURCE_EXHAUSTED,
  WATCHER_TOO_SLOW: status.RESOURCE_EXHAUSTED,
  LIMIT_MISMATCH: status.FAILED_PRECONDITION,
  NO_SUCH_LABEL: status.NOT_FOUND,
  RESOURCE_NOT_FOUND: status.NOT_FOUND,
  WEBHOOK_NOT_FOUND: status.NOT_FOUND,
  RESOURCE_IN_USE: status.FAILED_PRECONDITION,
};

/**
 * Most holder ids sent in `tracker-holder-lock-ids`: a semaphore may have 1000 holders, and
 * trailers must stay small (clients built on gRPC's C core refuse more than 8 KiB of metadata
 * by default). `tracker-holder-count` says how many there are.
 */
export const MAX_HOLDER_IDS = 32;

/** A name in a trailer: metadata values are printable ASCII, names are any Unicode. */
const encodeName = (name: string) => encodeURIComponent(name);

/**
 * A gRPC error for any thrown error. The stable code travels in the `tracker-code`
 * trailer, and the error's details in `tracker-*` trailers where they apply (the list is in
 * the .proto's header), so clients need not parse messages. Internals of unexpected errors
 * are never sent.
 */
export function toGrpcError(error: unknown, deadlinePassed = false): Partial<ServiceError> {
  const metadata = new Metadata();
  if (!(error instanceof TrackerError)) {
    metadata.set('tracker-code', ErrorCode.INTERNAL);
    return { code: status.INTERNAL, details: 'internal error', metadata };
  }
  metadata.set('tracker-code', error.code);
  let details = error.message;
  const { field, existingLock, holders, limit, service, label } = error.details;
  if (field) metadata.set('tracker-field', field);
  if (error.details.lockId) metadata.set('tracker-lock-id', error.details.lockId);
  if (error.details.retryAfterSeconds !== undefined) {
    metadata.set('retry-after', String(error.details.retryAfterSeconds));
  }
  if (existingLock) {
    metadata.set('tracker-existing-lock-id', existingLock.id);
    const others = (holders?.length ?? 1) - 1;
    details =
      `${error.message}: service "${existingLock.service}" is held by "${existingLock.who}" ` +
      `(lock id ${existingLock.id}, since ${formatTimestamp(existingLock.createdAt)})` +
      (others > 0 ? ` and ${others} other holder${others === 1 ? '' : 's'}` : '');
  }
  if (holders && holders.length > 0) {
    metadata.set(
      'tracker-holder-lock-ids',
      holders
        .slice(0, MAX_HOLDER_IDS)
        .map((holder) => holder.id)
        .join(','),
    );
    metadata.set('tracker-holder-count', String(holders.length));
  }
  if (limit !== undefined) metadata.set('tracker-limit', String(limit));
  if (service !== undefined) metadata.set('tracker-service', encodeName(service));
  if (label !== undefined) metadata.set('tracker-label', encodeName(label));
  // A wait cut short by the call's own deadline is that deadline's doing.
  const code =
    error.code === ErrorCode.WAIT_TIMEOUT && deadlinePassed
      ? status.DEADLINE_EXCEEDED
      : GRPC_STATUS[error.code];
  return { code, details, metadata };
}
